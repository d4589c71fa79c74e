"""The ``"triton"`` strategy: PEDConv at the cost of one static convolution, in fused Triton kernels.

Every public dynamic convolution builds per-sample weights and folds the batch into the groups
of a grouped convolution. PEDConv's weight is the shared base weight scaled by a CP tensor
(Eq. 2), so the convolution is the static implicit GEMM whose weight tile is scaled, in
registers, by the sample's factors as it is loaded: no per-sample weight, no tap intermediate,
no batch-as-groups convolution, forward or backward (see :mod:`.kernels` for the maths).

* :mod:`.kernels`  the Triton kernels (forward, input gradient, fused weight/component gradient,
  and direct forms for depthwise and tiny groups), as plain functions
* :mod:`.launch`   sizes, grids, autotuned tile lists, the interpreter switch, forward/backward

Runs on CUDA tensors (float16, bfloat16, float32 with float32 accumulation; float64), any rank,
stride, padding, dilation and groups, in 1, 2 and 3 dimensions. On CPU tensors it runs in
Triton's interpreter when ``TRITON_INTERPRET=1`` (slowly: for tests), else it raises. The
weight-gradient reductions use atomic additions: not bitwise reproducible, and refused (or
warned about) under ``torch.use_deterministic_algorithms``. Under ``torch.compile`` the
forward and backward are the custom operator ``pedconv::fused_conv``
(:mod:`pedconv.execution.compiled`); exporting takes the ``"factored"`` export form.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any, Optional

import torch
from torch import Tensor

from ...method.cp import CPFactors
from ..geometry import ConvGeometry

__all__ = ["AVAILABLE", "fused", "fused_backward", "fused_forward"]

AVAILABLE = importlib.util.find_spec("triton") is not None
"""Whether the ``triton`` package is installed (it comes with the CUDA builds of torch)."""


def _launch() -> Any:
    if not AVAILABLE:
        raise RuntimeError("strategy 'triton' needs the triton package (pip install triton; CUDA builds of torch "
                           "install it), or use strategy='auto'")
    from . import launch

    return launch


def fused_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors,
                  geometry: ConvGeometry) -> Tensor:
    """The forward kernels, without autograd (what the custom operator runs).

    Example:
        >>> import os
        >>> os.environ["TRITON_INTERPRET"] = "1"
        >>> f = CPFactors(None, torch.rand(2, 1, 4), None)
        >>> fused_forward(torch.randn(2, 4, 5, 5), torch.randn(3, 4, 1, 1), None, f, ConvGeometry()).shape
        torch.Size([2, 3, 5, 5])
        >>> del os.environ["TRITON_INTERPRET"]
    """
    return _launch().conv_forward(x, weight, bias, factors, geometry)


def fused_backward(grad: Tensor, x: Tensor, weight: Tensor, has_bias: bool, factors: CPFactors,
                   geometry: ConvGeometry, needs: Any) -> tuple[Optional[Tensor], ...]:
    """Gradients ``(x, weight, bias, gamma, phi, psi)`` from the backward kernels (``needs``: which;
    ``None`` for the others and for disabled components).

    Example:
        >>> import os
        >>> os.environ["TRITON_INTERPRET"] = "1"
        >>> x, w, f = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 1, 1), CPFactors(None, torch.rand(2, 1, 4), None)
        >>> grads = fused_backward(torch.ones(2, 3, 5, 5), x, w, False, f, ConvGeometry(), [True] * 6)
        >>> [None if g is None else tuple(g.shape) for g in grads]
        [(2, 4, 5, 5), (3, 4, 1, 1), None, None, (2, 1, 4), None]
        >>> del os.environ["TRITON_INTERPRET"]
    """
    if (needs[1] or needs[3] or needs[4] or needs[5]) and torch.are_deterministic_algorithms_enabled():
        # atomic additions: refused, or warned about, as torch does for its own such kernels
        message = ("pedconv strategy 'triton' sums its weight and component gradients with atomic additions "
                   "(not deterministic), but torch.use_deterministic_algorithms(True) is set; use "
                   "strategy='materialize' or 'factored'")
        if not torch.is_deterministic_algorithms_warn_only_enabled():
            raise RuntimeError(message)
        warnings.warn(message, stacklevel=2)
    return _launch().conv_backward(grad, x, weight, has_bias, factors, geometry, needs)


class _FusedConv(torch.autograd.Function):
    """Saves only the inputs and the small components; the backward kernels rebuild the rest."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor],
                phi: Optional[Tensor], psi: Optional[Tensor], geometry: ConvGeometry) -> Tensor:
        ctx.save_for_backward(x, weight, gamma, phi, psi)
        ctx.geometry, ctx.has_bias = geometry, bias is not None
        return fused_forward(x, weight, bias, CPFactors(gamma, phi, psi), geometry)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        x, weight, gamma, phi, psi = ctx.saved_tensors
        grads = fused_backward(grad, x, weight, ctx.has_bias, CPFactors(gamma, phi, psi), ctx.geometry,
                               ctx.needs_input_grad[:6])
        return (*grads, None)


def fused(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry) -> Tensor:
    """The ``"triton"`` strategy (see the module docstring).

    Example:
        >>> import os
        >>> os.environ["TRITON_INTERPRET"] = "1"  # CPU tensors: Triton's interpreter
        >>> x, w = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3)
        >>> f = CPFactors(torch.rand(2, 1, 5), None, torch.rand(2, 1, 9))
        >>> y = fused(x, w, None, f, ConvGeometry.make(padding=1))
        >>> y.shape
        torch.Size([2, 5, 6, 6])
        >>> del os.environ["TRITON_INTERPRET"]
    """
    return _FusedConv.apply(x, weight, bias, *factors, geometry)
