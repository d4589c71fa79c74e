"""``pedconv segment train|eval``: semantic segmentation (UperNet, dilated PSPNet) on ADE20K-layout data.

Examples::

    pedconv segment train --quick --output runs/seg                     # offline scene set, minutes on a CPU
    pedconv segment train --data-dir /data/ADEChallengeData2016 --output runs/upernet   # 160k schedule
    pedconv segment train --preset pspnet --data-dir /data/ADEChallengeData2016 --output runs/psp
    pedconv segment train --output runs/seg --resume auto               # continue after an interruption
    pedconv segment eval --checkpoint runs/seg/best.pt --json           # mIoU, aAcc, mAcc

``train`` is ``pedconv train``'s loop (run folder, ``--resume auto``, DDP, progress bar,
``metrics.jsonl``, ``curves.png``, ``last.pt``/``best.pt``) with the segmentation task of
:mod:`pedconv.tasks.segmentation.task`; it ends by writing ``result.json`` with the mIoU,
aAcc and mAcc (%) of the last epoch.
"""

from __future__ import annotations

from ...training.task_command import TaskCommand
from .task import Segmentation

_COMMAND = TaskCommand(Segmentation)
build_parser = _COMMAND.build_parser
config_layer = _COMMAND.config_layer
validate_args = _COMMAND.validate_args
run = _COMMAND.run
