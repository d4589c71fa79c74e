"""The ``"hybrid"`` strategy: ``phi`` and ``gamma`` on the activations, only ``psi`` in the kernel.

Like ``"factored"`` for ``phi`` and ``gamma``, but the kxk ``psi`` goes into a per-sample
kernel ``W_base * psi_b`` run as one batch-as-groups convolution: a single batch-sized
weight instead of the three tensors that composing the full weight costs.
"""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor

from ..method.cp import CPFactors
from .factored import factored
from .geometry import ConvGeometry, add_bias, batch_as_groups_conv, per_channel

__all__ = ["hybrid"]


def hybrid(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry) -> Tensor:
    """The ``"hybrid"`` strategy (see the module docstring)."""
    gamma, phi, psi = factors
    kernel, ndim = tuple(weight.shape[2:]), geometry.ndim
    if psi is None or math.prod(kernel) == 1:
        return factored(x, weight, bias, factors, geometry)
    out: Optional[Tensor] = None
    for r in range(factors.rank):
        xr = x if phi is None else x * per_channel(phi[:, r].repeat(1, geometry.groups), ndim)
        # Only psi enters the kernel: autograd keeps the small factors, not their product
        # beyond the convolution's own saved weight.
        w = weight.unsqueeze(0) * psi[:, r].reshape(-1, 1, 1, *kernel)
        yr = batch_as_groups_conv(xr, w, geometry)
        if gamma is not None:
            yr = yr * per_channel(gamma[:, r], ndim)
        out = yr if out is None else out + yr
    assert out is not None
    return add_bias(out, bias)
