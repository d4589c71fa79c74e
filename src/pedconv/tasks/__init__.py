"""Downstream tasks (detection, segmentation, adversarial robustness) plug in here.

A task is one subpackage, ``pedconv/tasks/<task>/``, that brings only what is specific to
it -- its dataset format, model builders (registered in :mod:`pedconv.models`), loss and
metric -- and reuses :mod:`pedconv.training` for everything else: option parsing and YAML
presets (:mod:`~pedconv.training.config`), the training loop and evaluation
(:mod:`~pedconv.training.loop`), run checkpoints and resume
(:mod:`~pedconv.training.checkpoint`), torchrun/DDP (:mod:`~pedconv.training.distributed`)
and progress, ``metrics.jsonl`` and curves (:mod:`~pedconv.training.report`). Its command
is one more row of the command table in :mod:`pedconv.cli`.
"""
