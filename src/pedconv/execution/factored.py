"""The ``"factored"`` strategy: apply the CP factors to activations, keep the weight shared.

Eq. (3) regroups as ``y_b = gamma_b * conv_{W_base * psi_b}(phi_b * x_b)``: ``phi`` scales
input channels, ``gamma`` output channels, and only ``psi`` changes the kernel.

* ``psi`` off or a 1x1 kernel: ``psi`` is a scalar that joins ``gamma``, and the static
  convolution with ``W_base`` runs between the two scalings (:class:`_ScaledConv`).
* kxk ``psi``, stride 1, no groups: a kxk convolution is the sum over its taps of 1x1
  convolutions on shifted inputs, so one 1x1 convolution with the *shared* weight gives
  every tap's output and a per-sample weighted, shifted sum applies ``psi`` and ``gamma``
  (:func:`taps_conv`).
* kxk ``psi``, strided or grouped: im2col columns scaled by ``phi (x) psi``, then a GEMM
  with the shared weight (:func:`scaled_columns_conv`).

Extra work is proportional to the activations, nothing batch-sized is built from the
weight, and the graph does not depend on the batch size (used for tracing and export).
Rank ``R`` costs ``R`` convolutions. Every form serves 1-, 2- and 3-D convolutions.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..method.cp import CPFactors
from ._torch_specific import is_exporting
from .geometry import (
    CONV_FUNCTIONS,
    ConvGeometry,
    add_bias,
    conv_output_size,
    per_channel,
    spatial_dims,
    stride_index,
    tap_windows,
)

__all__ = ["factored", "im2col", "scaled_columns_conv", "taps_conv"]


def _pad(x: Tensor, padding: tuple[int, ...]) -> Tensor:
    """Symmetric zero padding of every spatial dimension (``F.pad`` order: last dim first)."""
    if not any(padding):
        return x
    return F.pad(x, [p for p in reversed(padding) for _ in range(2)])


def im2col(x: Tensor, kernel: tuple[int, ...], geometry: ConvGeometry) -> Tensor:
    """The im2col columns ``(B, Cin, taps, L)`` of a convolution with ``geometry``, in any dimension.

    2-D uses ``F.unfold``; 1-D/3-D stack each tap's strided window of the padded input (torch
    has no N-D unfold).

    Example:
        >>> im2col(torch.randn(2, 3, 5, 5), (3, 3), ConvGeometry.make(padding=1)).shape
        torch.Size([2, 3, 9, 25])
    """
    batch, cin = x.shape[:2]
    if geometry.ndim == 2:
        cols = F.unfold(x, kernel, dilation=geometry.dilation, padding=geometry.padding, stride=geometry.stride)
        return cols.view(batch, cin, math.prod(kernel), -1)
    xp = _pad(x, geometry.padding)
    out = geometry.output_size(x.shape[2:], kernel)
    everything = (slice(None), slice(None))
    windows = [xp[everything + tuple(w)] for _, *w in tap_windows(kernel, geometry.dilation, geometry.stride, out)]
    return torch.stack(windows, 2).reshape(batch, cin, len(windows), -1)


def _columns_gemm(x: Tensor, weight: Tensor, col_scale: Tensor, geometry: ConvGeometry) -> Tensor:
    """``conv(x, W_base * col_scale_b)`` as im2col then one GEMM with the shared weight.

    ``col_scale`` is ``(B, Cin/groups, taps)``: it scales the columns, not the weight,
    so the weight stays shared across the batch.
    """
    batch = x.shape[0]
    cout, cin_g = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    taps, groups = math.prod(kernel), geometry.groups
    out = geometry.output_size(x.shape[2:], kernel)
    cols = im2col(x, kernel, geometry)
    cols = cols.view(batch, groups, cin_g, taps, -1) * col_scale.view(batch, 1, cin_g, taps, 1)
    y = torch.matmul(weight.view(groups, cout // groups, cin_g * taps), cols.view(batch, groups, cin_g * taps, -1))
    return y.reshape(batch, cout, *out)


def scaled_columns_conv(x: Tensor, weight: Tensor, factors: CPFactors, r: int, geometry: ConvGeometry) -> Tensor:
    """Rank term ``r`` via im2col: ``phi (x) psi`` scale the columns, ``gamma`` the output."""
    gamma, phi, psi = factors
    assert psi is not None
    cin_g = weight.shape[1]
    scale = psi[:, r, None, :].expand(-1, cin_g, -1)
    if phi is not None:
        scale = phi[:, r, :, None] * scale
    y = _columns_gemm(x, weight, scale, geometry)
    return y if gamma is None else y * per_channel(gamma[:, r], geometry.ndim)


class _TapSum(torch.autograd.Function):
    """``y[b, t] = sum_k coef[b, k, t] * z[b, k, t, window_k]`` over the kernel taps ``k``.

    Hand-written backward: autograd through nine strided slices would allocate a full
    zero gradient of ``z`` per tap; this writes all taps into one buffer.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, coef: Tensor, index: list[Any]) -> Tensor:
        ndim = z.dim() - 3
        out: Optional[Tensor] = None
        for k, sl in enumerate(index):
            c = per_channel(coef[:, k], ndim)
            out = z[sl] * c if out is None else out.addcmul_(z[sl], c)
        assert out is not None
        ctx.save_for_backward(z, coef)
        ctx.index = index
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:
        z, coef = ctx.saved_tensors
        ndim = z.dim() - 3
        gz = torch.zeros_like(z) if ctx.needs_input_grad[0] else None
        gc = torch.empty_like(coef) if ctx.needs_input_grad[1] else None
        for k, sl in enumerate(ctx.index):
            if gz is not None:
                gz[sl].addcmul_(grad, per_channel(coef[:, k], ndim))
            if gc is not None:
                gc[:, k] = (z[sl] * grad).sum(spatial_dims(grad))
        return gz, gc, None


def taps_conv(x: Tensor, weight: Tensor, coef: Tensor, geometry: ConvGeometry) -> Tensor:
    """Stride-1, ungrouped ``conv(x, W_base * coef_b)`` with ``coef`` ``(B, taps, Cout)``.

    One 1x1 convolution with the *shared* weight produces every tap's output (the FLOPs of
    the kxk convolution), then a per-sample weighted, shifted sum applies ``psi`` (and
    ``gamma``). Nothing batch-sized is built from the weight, which is what deep layers need.
    """
    batch = x.shape[0]
    cout, cin = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    taps, ndim = math.prod(kernel), geometry.ndim
    pointwise = weight.permute(*range(2, 2 + ndim), 0, 1).reshape(taps * cout, cin, *([1] * ndim))
    z = _pad(CONV_FUNCTIONS[ndim](x, pointwise), geometry.padding)
    padded = tuple(z.shape[2:])
    out_size = conv_output_size(padded, kernel, (1,) * ndim, (0,) * ndim, geometry.dilation)
    index = [
        (slice(None), t, slice(None), *tuple(windows))
        for t, *windows in tap_windows(kernel, geometry.dilation, (1,) * ndim, out_size)
    ]
    z = z.view(batch, taps, cout, *padded)
    if is_exporting() or torch.compiler.is_compiling():
        # Traceable form (no custom Function, no in-place writes) for jit.trace and ONNX, and for
        # torch.compile: inductor fuses the weighted shifted sum and its backward into single
        # kernels, where the custom Function's in-place slice writes become one full copy each.
        return torch.stack([z[sl] * per_channel(coef[:, k], ndim) for k, sl in enumerate(index)], 0).sum(0)
    return _TapSum.apply(z, coef, index)


class _ScaledConv(torch.autograd.Function):
    """``out_scale * conv(x * in_scale, W)`` keeping only ``x`` and the pre-scale output.

    Autograd would also keep ``x * in_scale``, an input-sized copy per layer; it is
    recomputed in backward instead (one elementwise pass).
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, in_scale: Optional[Tensor], out_scale: Optional[Tensor],
        geometry: ConvGeometry,
    ) -> Tensor:
        n = geometry.ndim
        xr = x if in_scale is None else x * per_channel(in_scale, n)
        yr = geometry.conv(xr, weight)
        y = yr if out_scale is None else yr * per_channel(out_scale, n)
        keep_yr = out_scale is not None and ctx.needs_input_grad[3]
        ctx.save_for_backward(x, weight, in_scale, out_scale, yr if keep_yr else None)
        ctx.geometry = geometry
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        x, weight, in_scale, out_scale, yr = ctx.saved_tensors
        g: ConvGeometry = ctx.geometry
        n = g.ndim
        dt = grad.dtype  # the forward may have run under autocast
        x, weight = x.to(dt), weight.to(dt)
        need_x, need_w, need_in, need_out = ctx.needs_input_grad[:4]
        grad_out_scale = None
        if out_scale is not None:
            if need_out:
                grad_out_scale = (grad * yr.to(dt)).sum(spatial_dims(grad))
            grad = grad * per_channel(out_scale.to(dt), n)
        xr = x if in_scale is None else x * per_channel(in_scale.to(dt), n)
        grad_xr, grad_w, _ = torch.ops.aten.convolution_backward(
            grad.contiguous(), xr, weight, None, list(g.stride), list(g.padding), list(g.dilation),
            False, [0] * n, g.groups, [need_x or need_in, need_w, False],
        )
        grad_x = grad_in_scale = None
        if grad_xr is not None:
            if in_scale is None:
                grad_x = grad_xr
            else:
                grad_x = grad_xr * per_channel(in_scale.to(dt), n) if need_x else None
                grad_in_scale = (grad_xr * x).sum(spatial_dims(x)) if need_in else None
        return grad_x, grad_w, grad_in_scale, grad_out_scale, None


def _rank_term(x: Tensor, weight: Tensor, factors: CPFactors, r: int, geometry: ConvGeometry) -> Tensor:
    gamma, phi, psi = factors
    cout = weight.shape[0]
    if psi is not None and math.prod(weight.shape[2:]) > 1:
        if geometry.groups == 1 and geometry.unit_stride:
            # psi (and gamma) weight the taps; phi scales the input.
            xr = x if phi is None else x * per_channel(phi[:, r], geometry.ndim)
            coef = psi[:, r, :, None].expand(-1, -1, cout)
            if gamma is not None:
                coef = coef * gamma[:, r, None, :]
            return taps_conv(xr, weight, coef, geometry)
        return scaled_columns_conv(x, weight, factors, r, geometry)
    # phi indexes the channels inside one group, so it repeats across groups; a 1x1 psi is
    # one scalar per sample that joins gamma on the output.
    in_scale = phi[:, r].repeat(1, geometry.groups) if phi is not None else None
    out_scale = gamma[:, r] if gamma is not None else None
    if psi is not None:
        out_scale = psi[:, r].expand(-1, cout) if out_scale is None else out_scale * psi[:, r]
    return _ScaledConv.apply(x, weight, in_scale, out_scale, geometry)


def factored(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry) -> Tensor:
    """The ``"factored"`` strategy (see the module docstring)."""
    if math.prod(weight.shape[2:]) == 1 and geometry.no_padding and not geometry.unit_stride:
        # A strided 1x1 convolution reads every stride-th position only: subsample first, so
        # that the phi scaling and the convolution touch 1/stride^n of the input.
        x = x[stride_index(geometry)]
        geometry = ConvGeometry((1,) * geometry.ndim, geometry.padding, geometry.dilation, geometry.groups)
    out: Optional[Tensor] = None
    for r in range(factors.rank):
        yr = _rank_term(x, weight, factors, r, geometry)
        out = yr if out is None else out + yr
    assert out is not None
    return add_bias(out, bias)
