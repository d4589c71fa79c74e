"""``pedconv detect train|eval``: object detection (SSD300, Faster R-CNN + FPN) on COCO-format data.

Examples::

    pedconv detect train --quick --output runs/det                 # offline scene set, a few minutes on a CPU
    pedconv detect train --data-dir /data/coco --output runs/ssd   # Table 2's SSD300 recipe (the defaults)
    torchrun --nproc_per_node 8 -m pedconv.cli detect train --data-dir /data/coco --output runs/ssd
    pedconv detect train --preset fasterrcnn --data-dir /data/coco --model fasterrcnn_resnet50_fpn
    pedconv detect train --output runs/det --resume auto           # continue after an interruption
    pedconv detect eval --checkpoint runs/det/best.pt --json       # AP, AP50, AP75, AP_S, AP_M, AP_L, AR100

``train`` is ``pedconv train``'s loop (run folder, ``--resume auto``, DDP, progress bar,
``metrics.jsonl``, ``curves.png``, ``last.pt``/``best.pt``) with the detection task of
:mod:`pedconv.tasks.detection.task`; it ends by writing ``result.json`` with the COCO box
metrics (%) of the last epoch.
"""

from __future__ import annotations

from ...training.task_command import TaskCommand
from .task import Detection

_COMMAND = TaskCommand(Detection)
build_parser = _COMMAND.build_parser
config_layer = _COMMAND.config_layer
validate_args = _COMMAND.validate_args
run = _COMMAND.run
