"""The slow strategies, kept as baselines for the benchmarks.

``"naive"`` is the authors' formulation: the full per-sample weight of Eq. (2) and a
batch-as-groups convolution for every layer. ``"loop"`` runs one ``F.conv2d`` per sample.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..method.cp import CPFactors, compose_weight
from .geometry import ConvGeometry, add_bias, batch_as_groups_conv

__all__ = ["loop", "naive"]


def naive(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry) -> Tensor:
    """The authors' formulation: compose every sample's weight, one grouped convolution."""
    return add_bias(batch_as_groups_conv(x, compose_weight(weight, *factors), geometry), bias)


def loop(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry) -> Tensor:
    """One ``F.conv2d`` per sample with the weight of Eq. (2)."""
    w = compose_weight(weight, *factors)
    return torch.cat([geometry.conv(x[b : b + 1], w[b], bias) for b in range(x.shape[0])], 0)
