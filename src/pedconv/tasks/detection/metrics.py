"""COCO box AP (the metrics of the PEDConv paper's Table 2) over torchvision-style detections.

:class:`DetectionMetric` wraps torchmetrics' ``MeanAveragePrecision`` (COCO evaluation by
``faster_coco_eval``, or by ``pycocotools`` where faster-coco-eval cannot be imported) and
reports the numbers of Table 2 in percent.

Distributed: when ``torch.distributed`` is initialised, :meth:`DetectionMetric.compute` gathers
every rank's images (as objects, so ranks may hold different numbers of them) before the COCO
evaluation, so every rank must call it and gets the same, global result. The detections are
kept on the CPU between batches (a few hundred boxes per image).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import Any, Literal, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DETECTION_KEYS", "DetectionMetric"]

DETECTION_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR100")
"""The keys of :meth:`DetectionMetric.compute`: Table 2's columns and the recall at 100 detections."""

# torchmetrics' names for them
_TORCHMETRICS_KEYS = dict(zip(DETECTION_KEYS, ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                                               "mar_100")))
_PRED_KEYS = ("boxes", "scores", "labels")
_TARGET_KEYS = ("boxes", "labels", "iscrowd", "area")


_Backend = Literal["pycocotools", "faster_coco_eval"]


def _default_backend() -> _Backend:
    return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


class DetectionMetric:
    """COCO box AP/AR (IoU 0.5:0.95, areas small/medium/large, 100 detections per image).

    Args:
        backend: ``"faster_coco_eval"`` or ``"pycocotools"``; by default the first that imports.
        device: where the accumulated detections are kept (the rank's GPU under NCCL).

    Inputs follow torchvision's detection convention: per image, a prediction
    ``{"boxes": [N, 4] xyxy, "scores": [N], "labels": [N]}`` and a target ``{"boxes": [M, 4],
    "labels": [M]}`` (optional ``iscrowd`` and ``area``: COCO's segment area, which decides the
    small/medium/large range; without it the box area is used). Other keys are ignored.

    :meth:`compute` returns percent (0-100). A size range with no ground truth, where COCO's
    evaluation reports -1, is ``nan``.

    Example:
        >>> m = DetectionMetric()
        >>> box = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
        >>> m.update([{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}],
        ...          [{"boxes": box, "labels": torch.tensor([1])}])
        >>> r = m.compute()
        >>> r["AP"], r["AP50"], r["AP_S"], r["AP_M"], r["AP_L"]  # 40x40 is "medium" (32^2 to 96^2)
        (100.0, 100.0, nan, 100.0, nan)
    """

    def __init__(self, backend: Optional[_Backend] = None, device: Union[str, torch.device, None] = None) -> None:
        self.backend = backend or _default_backend()
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._preds: list[dict[str, Tensor]] = []
        self._targets: list[dict[str, Tensor]] = []

    @property
    def device(self) -> torch.device:
        """Where the inputs are computed (the detections are kept on the CPU until :meth:`compute`)."""
        return self._device

    def to(self, device: Union[str, torch.device]) -> DetectionMetric:
        """Record ``device`` as the inputs' device; returns ``self``."""
        self._device = torch.device(device)
        return self

    def update(self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]) -> None:
        """Add one batch: a prediction and a target dict per image (see the class docstring)."""
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        self._preds += [{k: p[k].detach().cpu() for k in _PRED_KEYS} for p in preds]
        self._targets += [{k: t[k].detach().cpu() for k in _TARGET_KEYS if k in t} for t in targets]

    def compute(self) -> dict[str, float]:
        """``AP, AP50, AP75, AP_S, AP_M, AP_L, AR100`` in percent over everything added (all ranks)."""
        from torchmetrics.detection import MeanAveragePrecision

        preds, targets = self._preds, self._targets
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank's images, gathered as objects: torchmetrics' own sync gathers its list states
            # element by element and breaks when the ranks hold different numbers of images (an
            # uneven validation split), as the shard sampler gives them.
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (preds, targets))
            preds = [p for rank_preds, _ in gathered for p in rank_preds]
            targets = [t for _, rank_targets in gathered for t in rank_targets]
        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=self.backend, sync_on_compute=False)
        # COCO's AP keeps each image's 100 best-scored detections; detectors return more
        # (SSD: 200), which is expected, not worth a warning per image.
        metric.warn_on_many_detections = False
        metric.update(preds, targets)
        raw = metric.compute()
        out = {}
        for key, name in _TORCHMETRICS_KEYS.items():
            value = float(raw[name])
            out[key] = math.nan if value < 0 else 100.0 * value
        return out

    def reset(self) -> None:
        """Forget every detection added so far."""
        self._preds, self._targets = [], []
