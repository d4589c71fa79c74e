"""Mean IoU (the metric of the PEDConv paper's Table 3), pixel and class accuracy, from a confusion matrix.

The standard ADE20K evaluation (as mmsegmentation computes it): pixels labelled
``ignore_index`` are left out; a class's IoU is ``TP / (TP + FP + FN)`` over the whole
evaluation set; the mean runs over the classes present in the ground truth or in the
prediction, so a class absent from both is excluded (not counted as 0 or 1). ``aAcc`` is the
fraction of pixels labelled right, ``mAcc`` the mean per-class recall over the classes present
in the ground truth.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["SegmentationMetric", "scores_from_confusion"]


def scores_from_confusion(matrix: Tensor) -> dict[str, float]:
    """``mIoU``, ``aAcc``, ``mAcc`` (percent) of a ``[K, K]`` confusion matrix (rows ground truth,
    columns prediction); ``nan`` where nothing was counted.

    >>> m = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]])  # class 1: predicted, never true; class 2: absent
    >>> scores_from_confusion(m)  # IoU 75 and 0, class 2 excluded
    {'mIoU': 37.5, 'aAcc': 75.0, 'mAcc': 75.0}
    """
    m = matrix.double()
    tp, gt, pred = m.diagonal(), m.sum(1), m.sum(0)
    iou = tp / (gt + pred - tp)  # 0/0 = nan: a class in neither, excluded by nanmean
    total = m.sum()
    return {
        "mIoU": 100.0 * float(iou.nanmean()),
        "aAcc": 100.0 * float(tp.sum() / total) if total > 0 else float("nan"),
        "mAcc": 100.0 * float((tp / gt).nanmean()),
    }


class SegmentationMetric:
    """Accumulates a ``[K, K]`` confusion matrix (rows ground truth, columns prediction) on the device.

    Args:
        num_classes: K; labels are ``0..K-1``.
        ignore_index: the label of pixels left out (255 in ADE20K's reduced-zero labels).
        device: where the matrix lives (the rank's GPU under NCCL).

    Distributed: :meth:`compute`, :meth:`per_class_iou` and :meth:`confusion_matrix` sum the
    matrices of every rank (``all_reduce``) when ``torch.distributed`` is initialised, so every
    rank must call them, and all get the global result; the local matrix is left as it is.

    Example:
        >>> m = SegmentationMetric(3)
        >>> target = torch.tensor([[0, 0, 1, 255]])
        >>> m.update(torch.tensor([[0, 1, 1, 2]]), target)  # labels, or logits [B, K, H, W]
        >>> {k: round(v, 2) for k, v in m.compute().items()}  # IoU 1/2, 1/2; class 2 absent; 255 ignored
        {'mIoU': 50.0, 'aAcc': 66.67, 'mAcc': 75.0}
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: Union[str, torch.device] = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def to(self, device: Union[str, torch.device]) -> SegmentationMetric:
        """Move the matrix to ``device``; returns ``self``."""
        self.matrix = self.matrix.to(device)
        return self

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` labels ``[B, H, W]`` or logits ``[B, K, H, W]``, ``target`` labels ``[B, H, W]``.

        A label outside ``0..K-1`` (other than ``ignore_index`` in the target) raises ``ValueError``.
        """
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(1)
        if preds.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(preds.shape)} does not match target {tuple(target.shape)}")
        k = self.num_classes
        target = target.to(self.matrix.device)
        keep = target != self.ignore_index
        t, p = target[keep].long(), preds.to(self.matrix.device)[keep].long()
        for name, labels in (("target", t), ("prediction", p)):
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
                raise ValueError(f"{name} labels must be in 0..{k - 1} (or {self.ignore_index} in the target)")
        self.matrix += torch.bincount(t * k + p, minlength=k * k).view(k, k)

    def confusion_matrix(self) -> Tensor:
        """The matrix summed over the ranks (a copy)."""
        matrix = self.matrix.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(matrix)
        return matrix

    def per_class_iou(self) -> Tensor:
        """IoU of every class in percent (``[K]``, float64); ``nan`` for a class in neither GT nor prediction.

        >>> m = SegmentationMetric(2)
        >>> m.update(torch.tensor([0, 0]), torch.tensor([0, 0]))
        >>> m.per_class_iou()
        tensor([100.,  nan], dtype=torch.float64)
        """
        m = self.confusion_matrix().double()
        tp = m.diagonal()
        return 100.0 * tp / (m.sum(0) + m.sum(1) - tp)

    def compute(self) -> dict[str, float]:
        """``mIoU``, ``aAcc``, ``mAcc`` in percent over everything added (all ranks)."""
        return scores_from_confusion(self.confusion_matrix())

    def reset(self) -> None:
        """Zero the matrix."""
        self.matrix.zero_()
