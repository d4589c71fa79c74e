"""CondConv baseline: "CondConv: Conditionally Parameterized Convolutions for Efficient
Inference", Yang et al., NeurIPS 2019 (https://arxiv.org/abs/1904.04971).

The expert mixing and convolution are timm's ``CondConv2d``; this module adds the per-layer
router (global average pooling -> Linear -> sigmoid over the experts, as in timm's
``CondConvResidual``), so ``forward(x)`` takes what ``nn.Conv2d.forward`` takes and the layer
can be dropped in by :func:`pedconv.convert`-style swaps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import CondConv2d as _TimmCondConv2d
from torch import Tensor

from .base import BaselineConv2d

__all__ = ["CondConv2d"]


class CondConv2d(BaselineConv2d):
    """Conv whose weight is ``sum_k sigmoid(r_k(x)) W_k`` over ``num_experts`` experts.

    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``bias``: as in :class:`torch.nn.Conv2d` (integer padding).

    Args:
        num_experts: number of expert kernels K.

    Example:
        >>> import torch
        >>> CondConv2d(8, 16, 3, padding=1)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(self, *args: Any, num_experts: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.routing = nn.Linear(self.in_channels, num_experts, **self.factory_kwargs)
        self.conv = _TimmCondConv2d(
            self.in_channels, self.out_channels, self.kernel_size, stride=self.stride, padding=self.padding,
            dilation=self.dilation, groups=self.groups, bias=self.use_bias, num_experts=num_experts,
            **self.factory_kwargs,
        )

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, preserve_function: bool = False, **options: Any) -> CondConv2d:
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
        return cls._with_geometry_of(conv, **{"num_experts": 4, **options})

    def forward(self, x: Tensor) -> Tensor:
        routing = torch.sigmoid(self.routing(x.mean(dim=(2, 3))))
        return self.conv(x, routing)
