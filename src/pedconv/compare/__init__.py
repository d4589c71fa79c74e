"""``pedconv compare``: several models, one recipe, several seeds, one table (:mod:`.command`).

* :mod:`.presets`   the study presets (``--preset NAME``)
* :mod:`.plan`      model specs, the shared recipe, each run's options
* :mod:`.runner`    the runs: train, skip the finished, resume the interrupted
* :mod:`.progress`  the bar across all runs
* :mod:`.report`    the table, JSON and plots
* :mod:`.command`   the command line

>>> parse_spec("pedconv_cifar_resnet20:rank=4").kwargs
{'rank': 4}
"""

from .command import build_parser, main, run, run_compare, validate_args
from .plan import ModelSpec, init_source, parse_spec
from .presets import PRESETS
from .progress import CompareProgress
from .report import markdown, plot, plot_training_curves, summarize

__all__ = ["PRESETS", "CompareProgress", "ModelSpec", "build_parser", "init_source", "main", "markdown", "parse_spec",
           "plot", "plot_training_curves", "run", "run_compare", "summarize", "validate_args"]
