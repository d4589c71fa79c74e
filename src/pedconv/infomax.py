"""The info-max objective of Eq. (6), collected over a whole model.

Each :class:`~pedconv.PEDConv2d` with ``infomax=True`` records, in every training-mode
forward pass, the MSE between its decoder's reconstruction and the detached pooled input.
:func:`infomax_loss` sums those records, so the training loss is::

    loss = task_loss + INFOMAX_WEIGHT * infomax_loss(model)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["INFOMAX_WEIGHT", "infomax_loss", "strip_infomax"]

INFOMAX_WEIGHT: float = 1e-3
"""The paper's loss balance factor lambda of Eq. (6) (Sec. 4)."""


def infomax_loss(model: nn.Module) -> Tensor:
    """Sum of the info-max MSE losses recorded by the last forward pass of ``model``.

    Works on any module tree (a DDP or compiled wrapper included, since it walks
    ``model.modules()``). Layers in eval mode, or built with ``infomax=False``, record
    nothing; with nothing recorded the result is a zero scalar.

    Args:
        model: a model that contains PEDConv layers (or none).

    Returns:
        A scalar tensor; multiply it by :data:`INFOMAX_WEIGHT` (1e-3) before adding it to
        the task loss.

    Example:
        >>> import torch, torchvision, pedconv
        >>> model = pedconv.convert(torchvision.models.resnet18(num_classes=10))
        >>> out = model(torch.randn(2, 3, 64, 64))
        >>> loss = out.logsumexp(1).mean() + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(model)
        >>> loss.backward()
    """
    total: Optional[Tensor] = None
    for m in model.modules():
        value = getattr(m, "last_infomax_loss", None)
        if isinstance(value, Tensor):
            total = value if total is None else total + value
    if total is not None:
        return total
    p = next(model.parameters(), None)
    return torch.zeros((), device=p.device if p is not None else None)


def strip_infomax(model: nn.Module) -> nn.Module:
    """Remove every info-max decoder (training only) in place, for deployment; returns ``model``."""
    for m in model.modules():
        remove = getattr(m, "remove_decoder", None)
        if callable(remove):
            remove()
    return model
