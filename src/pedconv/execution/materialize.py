"""The ``"materialize"`` strategy: build each sample's weight of Eq. (2) once, then convolve.

Cost proportional to the weight: a plain convolution for a batch of one, a batched matrix
product for 1x1 kernels, otherwise the batch folded into the groups (in 1, 2 or 3 dimensions). Rank ``R`` is free
beyond the weight composition, and depthwise layers stay depthwise. The custom backward
keeps no batch-sized tensor, and large batches are processed in chunks of at most
:data:`MAX_WEIGHT_ELEMENTS` weight elements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from ..method.cp import CPFactors, compose_weight, compose_weight_backward, cp_tensor
from .factored import scaled_columns_conv
from .geometry import ConvGeometry, add_bias, batch_as_groups_conv, per_channel, spatial_numel, stride_index

__all__ = ["MAX_WEIGHT_ELEMENTS", "chunk_size", "materialize", "materialized_conv_backward"]

MAX_WEIGHT_ELEMENTS = 1 << 26
"""Largest per-sample weight block (elements) ``"materialize"`` builds at once; larger
batches are processed in chunks, so memory stays bounded whatever the batch size."""


def chunk_size(weight: Tensor) -> int:
    """How many samples' weights (of this base weight) :func:`materialize` builds at once."""
    return max(1, MAX_WEIGHT_ELEMENTS // weight.numel())


def _is_gemm(weight_shape: Sequence[int], geometry: ConvGeometry) -> bool:
    """A 1x1, ungrouped, unpadded convolution: a matrix product on NCHW memory."""
    return math.prod(weight_shape[-geometry.ndim :]) == 1 and geometry.groups == 1 and geometry.no_padding


def _strided(x: Tensor, geometry: ConvGeometry) -> Tensor:
    return x if geometry.unit_stride else x[stride_index(geometry)]


def _per_sample_conv(x: Tensor, w: Tensor, geometry: ConvGeometry) -> Tensor:
    """``conv(x[b], w[b])`` for every sample: a batched GEMM for 1x1 kernels, else batch-as-groups."""
    batch, cout, cin_g = w.shape[:3]
    if _is_gemm(w.shape, geometry):
        # One GEMM per sample straight on NCHW memory, no im2col and no layout reorder.
        x = _strided(x, geometry)
        y = torch.bmm(w.reshape(batch, cout, cin_g), x.reshape(batch, cin_g, spatial_numel(x.shape)))
        return y.reshape(batch, cout, *x.shape[2:])
    return batch_as_groups_conv(x, w, geometry)


def _weight_grad(
    x: Tensor, w: Tensor, grad: Tensor, geometry: ConvGeometry, need_x: bool
) -> tuple[Optional[Tensor], Tensor]:
    """``(dL/dx, dL/dW_b)`` of :func:`_per_sample_conv`."""
    batch, cout, cin_g = w.shape[:3]
    if _is_gemm(w.shape, geometry):
        xs = _strided(x, geometry)
        positions = spatial_numel(xs.shape)
        g2 = grad.reshape(batch, cout, positions)
        grad_w = torch.bmm(g2, xs.reshape(batch, cin_g, positions).transpose(1, 2))
        grad_x = None
        if need_x:
            gxs = torch.bmm(w.reshape(batch, cout, cin_g).transpose(1, 2), g2).view(xs.shape)
            if geometry.unit_stride:
                grad_x = gxs
            else:
                grad_x = x.new_zeros(x.shape)
                grad_x[stride_index(geometry)] = gxs
        return grad_x, grad_w
    cin = x.shape[1]
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad.reshape(1, batch * cout, *grad.shape[2:]),
        x.reshape(1, batch * cin, *x.shape[2:]),
        w.reshape(batch * cout, cin_g, *w.shape[3:]),
        None, list(geometry.stride), list(geometry.padding), list(geometry.dilation), False, [0] * geometry.ndim,
        batch * geometry.groups, [need_x, True, False],
    )
    return (None if grad_x is None else grad_x.view(x.shape)), grad_w


class _MaterializedConv(torch.autograd.Function):
    """Per-sample convolution whose per-sample weight is never kept for backward.

    Autograd would save the composed weight and the CP tensor, two batch-sized copies of
    the weight per layer; this saves only the input and the small components and rebuilds
    the weight in backward.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, gamma: Optional[Tensor], phi: Optional[Tensor],
        psi: Optional[Tensor], geometry: ConvGeometry,
    ) -> Tensor:
        w = compose_weight(weight, gamma, phi, psi)
        ctx.save_for_backward(x, weight, gamma, phi, psi)
        ctx.geometry = geometry
        return _per_sample_conv(x, w, geometry)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        x, weight, gamma, phi, psi = ctx.saved_tensors
        grads = materialized_conv_backward(grad, x, weight, CPFactors(gamma, phi, psi), ctx.geometry,
                                           ctx.needs_input_grad[:5])
        return (*grads, None)


def materialized_conv_backward(
    grad: Tensor, x: Tensor, weight: Tensor, factors: CPFactors, geometry: ConvGeometry, needs: Sequence[bool]
) -> tuple[Optional[Tensor], ...]:
    """Gradients ``(x, weight, gamma, phi, psi)`` of the materialized per-sample convolution (no
    bias) from ``grad``, rebuilding the per-sample weight from the factors (``needs``: which)."""
    # Under autocast the forward ran in lower precision: do the backward in grad's dtype.
    dt = grad.dtype
    if x.dtype != dt:
        x, weight = x.to(dt), weight.to(dt)
        factors = CPFactors(*(t.to(dt) if t is not None else None for t in factors))
    cp = cp_tensor(factors, weight.shape)  # once, for the weight and for W_base's gradient
    batch = cp.shape[0]
    w = weight.unsqueeze(0) * cp.view(batch, *weight.shape)
    grad_x, grad_w = _weight_grad(x, w, grad.contiguous(), geometry, needs[0])
    cout, cin_g = w.shape[1:3]
    grads = compose_weight_backward(grad_w.reshape(batch, cout, cin_g, -1), weight, factors, needs[1:5], cp)
    return (grad_x, *grads)


def _single_sample(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry
) -> Tensor:
    """Batch of one, rank 1: fold each component into whichever side is smaller.

    ``psi`` goes into the kernel; ``phi`` into the kernel or the input, ``gamma`` into the
    kernel or the output, by element count. Deep layers thus touch their (large) weight once.
    """
    gamma, phi, psi = factors
    cout, cin_g = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    taps, ndim = math.prod(kernel), geometry.ndim
    out_pixels = math.prod([(n - 1) // s + 1 for n, s in zip(x.shape[2:], geometry.stride)])
    if psi is not None and taps > 1 and weight.numel() > 4 * x.shape[1] * taps * out_pixels:
        # Deep layers: the kernel is far larger than the im2col columns, so scale the
        # columns instead and read the weight once, as the static conv does.
        return add_bias(scaled_columns_conv(x, weight, factors, 0, geometry), bias)
    w = weight
    out_scale = gamma[0, 0] if gamma is not None else None
    if psi is not None:
        if taps > 1:
            w = w * psi[0, 0].view(1, 1, *kernel)
        else:
            out_scale = psi[0, 0] if out_scale is None else out_scale * psi[0, 0]
    if phi is not None:
        if x.numel() < w.numel():
            x = x * per_channel(phi[0, 0].repeat(geometry.groups)[None], ndim)
        else:
            w = w * phi[0, 0].view(1, cin_g, *([1] * ndim))
    if out_scale is not None and cout * out_pixels >= w.numel():
        w = w * out_scale.reshape(-1, *([1] * (ndim + 1))).expand(cout, *([1] * (ndim + 1)))
        out_scale = None
    if _is_gemm(weight.shape, geometry):
        # A plain GEMM: mkldnn would re-pack the fresh weight on every call.
        xs = _strided(x, geometry)
        y = torch.mm(w.view(cout, cin_g), xs.reshape(cin_g, -1)).view(1, cout, *xs.shape[2:])
    elif out_scale is None:
        return geometry.conv(x, w, bias)
    else:
        y = geometry.conv(x, w)
    if out_scale is not None:
        y = y * per_channel(out_scale[None], ndim)
    return add_bias(y, bias)


def materialize(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry
) -> Tensor:
    """The ``"materialize"`` strategy (see the module docstring)."""
    if x.shape[0] == 1:
        if factors.rank == 1:
            return _single_sample(x, weight, bias, factors, geometry)
        return geometry.conv(x, compose_weight(weight, *factors)[0], bias)
    chunk = chunk_size(weight)
    if x.shape[0] <= chunk:
        # One block: no slicing (a slice's backward would write a zero-filled copy of x).
        return add_bias(_MaterializedConv.apply(x, weight, *factors, geometry), bias)
    # Bound the transient per-sample weight: at most MAX_WEIGHT_ELEMENTS at a time.
    parts = [
        _MaterializedConv.apply(x[i : i + chunk], weight, *factors.narrow(i, chunk), geometry)
        for i in range(0, x.shape[0], chunk)
    ]
    return add_bias(torch.cat(parts, 0), bias)
