"""Image classification, the task of ``pedconv train`` / ``pedconv eval``, on the training pipeline.

* :mod:`.readers`   the Fashion-MNIST IDX and CIFAR files on disk
* :mod:`.data`      the datasets as :class:`~pedconv.training.data.DataSpec` (Fashion-MNIST, CIFAR, ImageFolder)
* :mod:`.task`      the :class:`Classification` task: its options, step (top-1 as a step metric) and evaluation
* :mod:`.command`   ``pedconv train`` (the training manual) and :func:`train`
* :mod:`.evaluate`  ``pedconv eval``: accuracy, parameters, FLOPs and speed of a checkpoint or weights

>>> Classification().best_metric
'val_top1'
"""

from .command import train
from .data import DATASETS, build_data
from .task import Classification, ClassifyStep, evaluate_classifier

__all__ = ["DATASETS", "Classification", "ClassifyStep", "build_data", "evaluate_classifier", "train"]
