"""Downstream tasks: detection (``pedconv detect``), segmentation (``pedconv segment``) and
adversarial robustness (``pedconv adv``).

A task is one subpackage, ``pedconv/tasks/<task>/``, that brings only what is specific to
it -- its dataset format, loss and metric, as a :class:`pedconv.training.task.Task` subclass
(``task.py``), with its model builders registered in :mod:`pedconv.models` -- and reuses
:mod:`pedconv.training` for everything else: options and presets, the resumable loop, run
checkpoints, torchrun/DDP, progress, ``metrics.jsonl``, curves and ``result.json``. Its
command (``command.py``) is a :class:`~pedconv.training.task_command.TaskCommand` and one
more row of the command table in :mod:`pedconv.cli`. :mod:`.scenes` and :mod:`.offline` make
the offline data that detection and segmentation train on when no dataset is given.
"""
