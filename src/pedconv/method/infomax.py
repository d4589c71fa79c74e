"""Eq. (6): the info-max objective, per layer (the decoder) and over a whole model.

The decoder ``p(x | g)`` is a two-layer MLP with ReLU between (:class:`InfomaxDecoder`),
used in training only: it reconstructs the generator's (detached) input from the sampled
``g``, and each PEDConv layer with ``infomax=True`` records the reconstruction MSE in every
training-mode forward pass. :func:`infomax_loss` sums those records, so the training
loss is::

    loss = task_loss + INFOMAX_WEIGHT * infomax_loss(model)
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["INFOMAX_WEIGHT", "InfomaxDecoder", "infomax_loss", "strip_infomax"]

INFOMAX_WEIGHT: float = 1e-3
"""The paper's loss balance factor lambda of Eq. (6) (Sec. 4)."""


class InfomaxDecoder(nn.Sequential):
    """``g -> Linear -> ReLU -> Linear -> reconstructed generator input`` (Eq. 6).

    Args:
        g_features: length of ``g`` (all enabled components, all ranks).
        hidden: the generator's bottleneck width.
        out_features: the generator's input width (``Cin``).

    Example:
        >>> dec = InfomaxDecoder(10, 4, 64)
        >>> dec.mse(torch.randn(2, 10), torch.randn(2, 64)).shape
        torch.Size([])
    """

    def __init__(
        self,
        g_features: int,
        hidden: int,
        out_features: int,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__(
            nn.Linear(g_features, hidden, **dd),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_features, **dd),
        )

    def reset_parameters(self) -> None:
        for m in self:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def mse(self, g: Tensor, target: Tensor) -> Tensor:
        """MSE of the reconstruction of the detached ``target`` from ``g``, in at least
        float32 (also under bf16/fp16 autocast)."""
        recon = self(g)
        # Python's dtype rule, not torch.promote_types (a dispatcher call on every forward).
        dt = torch.float32 if recon.dtype in (torch.float16, torch.bfloat16) else recon.dtype
        return F.mse_loss(recon.to(dt), target.detach().to(dt))


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
