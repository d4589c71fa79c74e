"""DY-Conv baseline: "Dynamic Convolution: Attention over Convolution Kernels",
Chen et al., CVPR 2020 (https://arxiv.org/abs/1912.03458).

``K`` kernels aggregated by a softmax attention ``GAP -> FC -> ReLU -> FC -> softmax(z / T)``
whose temperature ``T`` is annealed from 30 to 1 over the first epochs (set
``layer.temperature``; :func:`dyconv_temperature` gives the paper's schedule). Executed as
the original: aggregate the weight per sample, then a batch-as-groups convolution.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..execution.geometry import batch_as_groups_conv
from .base import BaselineConv2d

__all__ = ["DyConv2d", "dyconv_temperature"]


def dyconv_temperature(epoch: float, anneal_epochs: float = 10.0, start: float = 30.0, end: float = 1.0) -> float:
    """Linear annealing of the attention temperature from ``start`` to ``end``."""
    if epoch >= anneal_epochs:
        return end
    return start + (end - start) * max(epoch, 0.0) / anneal_epochs


class DyConv2d(BaselineConv2d):
    """Conv whose weight is ``sum_k softmax(a(x) / T)_k W_k`` over ``num_kernels`` kernels.

    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``bias``: as in :class:`torch.nn.Conv2d` (integer padding).

    Args:
        num_kernels: K (4 in the paper).
        reduction: attention bottleneck ratio (hidden = max(4, Cin // reduction)).
        temperature: initial softmax temperature (30 in the paper).

    Example:
        >>> import torch
        >>> DyConv2d(8, 16, 3, padding=1)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(
        self, *args: Any, num_kernels: int = 4, reduction: int = 4, temperature: float = 30.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        dd = self.factory_kwargs
        if num_kernels < 1:
            raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
        in_channels, out_channels = self.in_channels, self.out_channels
        self.num_kernels, self.temperature = num_kernels, float(temperature)
        hidden = max(4, in_channels // reduction)
        self.attention = nn.Sequential(
            nn.Linear(in_channels, hidden, **dd), nn.ReLU(inplace=True), nn.Linear(hidden, num_kernels, **dd)
        )
        # The K kernels stacked along the output dimension, (K * Cout, Cin/groups, kh, kw): a
        # 4-d parameter, so `model.to(memory_format=torch.channels_last)` works.
        self.weight = nn.Parameter(
            torch.empty(num_kernels * out_channels, in_channels // self.groups, *self.kernel_size, **dd)
        )
        self.bias = nn.Parameter(torch.empty(num_kernels, out_channels, **dd)) if self.use_bias else None
        self.reset_parameters()

    def kernels(self) -> Tensor:
        """The weight as ``(K, Cout, Cin/groups, kh, kw)`` (a view when contiguous)."""
        return self.weight.reshape(self.num_kernels, self.out_channels, *self.weight.shape[1:])

    def reset_parameters(self) -> None:
        for k in range(self.num_kernels):
            nn.init.kaiming_uniform_(self.kernels()[k], a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def _start_as(self, conv: nn.Conv2d) -> None:
        """Every kernel (and bias) is a copy of ``conv``'s: the softmax attention sums to one, so
        the layer computes exactly what ``conv`` did, and the kernels diverge in training because
        each gets its own attention weight."""
        self.weight.copy_(conv.weight.repeat(self.num_kernels, 1, 1, 1))
        self._copy_bias_of(conv)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        attn = torch.softmax(self.attention(x.mean(dim=(2, 3))) / self.temperature, dim=1)
        w = torch.mm(attn, self.weight.reshape(self.num_kernels, -1))
        y = batch_as_groups_conv(x, w.view(batch, self.out_channels, *self.weight.shape[1:]), self.geometry)
        if self.bias is None:
            return y
        return y + torch.mm(attn, self.bias)[:, :, None, None]
