"""WeightNet baseline: "WeightNet: Revisiting the Design Space of Weight Networks", Ma et al.,
ECCV 2020 (https://arxiv.org/abs/2007.11823).

The kernel is generated per sample by ``GAP -> FC(Cin -> R) -> FC(R -> M Cout) -> sigmoid ->
grouped FC (G Cout groups) -> Cout x Cin/groups x k x k`` with ``R = max(16, Cin // r)``
(the official code's reduction, r = 16, kept inside each layer here instead of shared by a
block). The grouped FC holds ``M / G`` times a static kernel's weights; the official code uses
``M = G = 2``. Executed as the original: the generated weight, then a batch-as-groups conv.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..execution.geometry import batch_as_groups_conv
from .base import BaselineConv2d

__all__ = ["WeightNetConv2d"]


class WeightNetConv2d(BaselineConv2d):
    """Conv whose weight is a grouped FC of ``sigmoid(FC(FC(GAP(x))))`` (WeightNet).

    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``bias``: as in :class:`torch.nn.Conv2d` (integer padding; the bias is static).

    Args:
        ratio_m: M, the sigmoid layer has ``M * Cout`` units (2).
        groups_g: G, the last FC has ``G * Cout`` groups; must divide ``M * Cout`` (2).
        reduction: r, the first FC has ``R = max(16, Cin // r)`` units (16, the official code's).

    Example:
        >>> import torch
        >>> WeightNetConv2d(8, 16, 3, padding=1)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(self, *args: Any, ratio_m: int = 2, groups_g: int = 2, reduction: int = 16, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if ratio_m < 1 or groups_g < 1 or ratio_m % groups_g:
            raise ValueError(f"ratio_m={ratio_m} must be a multiple of groups_g={groups_g} (both >= 1)")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction={reduction!r}: expected an integer >= 1")
        dd, cin, cout = self.factory_kwargs, self.in_channels, self.out_channels
        self.ratio_m, self.groups_g, self.reduction = ratio_m, groups_g, reduction
        self.kernel_numel = cin // self.groups * math.prod(self.kernel_size)
        if self.kernel_numel % groups_g:
            raise ValueError(f"groups_g={groups_g} must divide Cin/groups*k*k={self.kernel_numel}")
        self.reduce = nn.Linear(cin, max(16, cin // reduction), **dd)
        self.fc1 = nn.Linear(self.reduce.out_features, ratio_m * cout, **dd)
        # The grouped FC: group j maps M/G sigmoid units to Cin/groups*k*k/G kernel entries.
        self.fc2 = nn.Parameter(torch.empty(groups_g * cout, self.kernel_numel // groups_g, ratio_m // groups_g, **dd))
        self.bias = nn.Parameter(torch.empty(cout, **dd)) if self.use_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.fc2, -1 / math.sqrt(self.kernel_numel), 1 / math.sqrt(self.kernel_numel))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.kernel_numel)
            nn.init.uniform_(self.bias, -bound, bound)

    def _start_as(self, conv: nn.Conv2d) -> None:
        """The sigmoid layer starts at 0.5 everywhere (``fc1`` at 0) and ``fc2`` generates
        ``conv``'s weight from it, so the layer computes exactly what ``conv`` did; ``fc1``
        still gets gradients, so the kernel becomes input-dependent."""
        self.fc1.weight.zero_()
        assert self.fc1.bias is not None
        self.fc1.bias.zero_()
        target = conv.weight.reshape(self.groups_g * self.out_channels, -1, 1)
        self.fc2.copy_(target.expand_as(self.fc2) * 2 / self.fc2.shape[-1])
        self._copy_bias_of(conv)

    def generate(self, x: Tensor) -> Tensor:
        """The per-sample kernels ``(B, Cout, Cin/groups, kh, kw)`` for an input ``(B, Cin, H, W)``."""
        s = torch.sigmoid(self.fc1(self.reduce(x.mean(dim=(2, 3)))))  # (B, M Cout)
        s = s.view(x.shape[0], self.groups_g * self.out_channels, self.ratio_m // self.groups_g, 1)
        w = torch.matmul(self.fc2, s)  # (B, G Cout, Cin/groups k k / G, 1)
        return w.view(x.shape[0], self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        y = batch_as_groups_conv(x, self.generate(x), self.geometry)
        return y if self.bias is None else y + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratio_m={self.ratio_m}, groups_g={self.groups_g}, reduction={self.reduction}"
