"""CondConv baseline: "CondConv: Conditionally Parameterized Convolutions for Efficient
Inference", Yang et al., NeurIPS 2019 (https://arxiv.org/abs/1904.04971).

The expert mixing and convolution are timm's ``CondConv2d``; this module adds the per-layer
router (global average pooling -> Linear -> sigmoid over the experts, as in timm's
``CondConvResidual``), so ``forward(x)`` takes what ``nn.Conv2d.forward`` takes and the layer
can be dropped in by :func:`pedconv.convert`-style swaps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
from timm.layers import CondConv2d as _TimmCondConv2d
from torch import Tensor
from torch.nn.common_types import _size_2_t

from ..execution.geometry import conv_arguments

__all__ = ["CondConv2d"]


class CondConv2d(nn.Module):
    """Conv whose weight is ``sum_k sigmoid(r_k(x)) W_k`` over ``num_experts`` experts.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias:
            as in :class:`torch.nn.Conv2d` (integer padding).
        num_experts: number of expert kernels K.

    Example:
        >>> import torch
        >>> CondConv2d(8, 16, 3, padding=1)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t = 0,
        dilation: _size_2_t = 1,
        groups: int = 1,
        bias: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        num_experts: int = 4,
    ) -> None:
        super().__init__()
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.routing = nn.Linear(in_channels, num_experts, **dd)
        self.conv = _TimmCondConv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias, num_experts=num_experts, **dd,
        )
        self.kernel_size, self.stride = self.conv.kernel_size, self.conv.stride
        self.padding, self.dilation = self.conv.padding, self.conv.dilation

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, preserve_function: bool = False, num_experts: int = 4) -> CondConv2d:
        """A CondConv layer with ``conv``'s geometry and freshly initialised experts.

        CondConv's sigmoid routing weights do not sum to a constant, so the only way to
        reproduce ``conv`` exactly is identical experts with a constant routing, which
        then receive identical gradients forever; ``preserve_function=True`` is refused.
        """
        if preserve_function:
            raise ValueError(
                "CondConv2d cannot keep a converted conv's function without identical, never-diverging "
                "experts; use preserve_function=False (fresh experts, conv geometry kept)"
            )
        layer = cls(**conv_arguments(conv, cls.__name__, zero_padding_only=True), num_experts=num_experts)
        layer.train(conv.training)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        routing = torch.sigmoid(self.routing(x.mean(dim=(2, 3))))
        return self.conv(x, routing)

    def macs(self, output_shape: Sequence[int], measured: Callable[[nn.Module], int]) -> int:
        """All of it as measured: routing, expert mixing and the convolution."""
        return measured(self)

    def static_macs(self, output_shape: Sequence[int]) -> int:
        """Multiply-adds of one static convolution of this shape."""
        pixels = (output_shape[0] if len(output_shape) == 4 else 1) * output_shape[-2] * output_shape[-1]
        return pixels * math.prod(self.conv.weight_shape)
