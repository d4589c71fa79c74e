"""``pedconv adv train|eval``: Free adversarial training (Shafahi et al. 2019) and PGD-10/50 evaluation.

Examples::

    pedconv adv train --quick --output runs/adv                   # Fashion-MNIST, offline, a few minutes on a CPU
    pedconv adv train --preset paper --data-dir /data/imagenet --output runs/adv-r50   # Table 4's recipe
    pedconv adv train --output runs/adv --resume auto             # continue after an interruption
    pedconv adv eval --checkpoint runs/adv/best.pt --json         # natural, pgd10, pgd50 (%)
    pedconv adv eval --checkpoint runs/plain/best.pt --eps 8/255  # any `pedconv train` checkpoint too

``--eps`` takes a number or a fraction (``4/255``, the paper's, is the default), in pixel
units: the normalisation is inside the attacked function. PGD is l-inf with a random start
and step ``eps/4`` (``--pgd-alpha``), run on the bare model (no DDP all-reduce per attack
step); ``--attack-subset N`` attacks the first N validation images only.

``train`` is ``pedconv train``'s loop (run folder, ``--resume auto``, DDP, progress bar,
``metrics.jsonl``, ``curves.png``, ``last.pt``/``best.pt``) with each minibatch replayed
``--replay`` times (m) and one persistent perturbation; it ends by writing ``result.json``
with ``natural``, ``pgd10`` and ``pgd50``.
"""

from __future__ import annotations

from ...training.task_command import TaskCommand
from .task import AdversarialTraining

_COMMAND = TaskCommand(AdversarialTraining)
build_parser = _COMMAND.build_parser
config_layer = _COMMAND.config_layer
validate_args = _COMMAND.validate_args
run = _COMMAND.run
