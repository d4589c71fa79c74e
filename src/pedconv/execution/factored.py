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
Rank ``R`` costs ``R`` convolutions.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..method.cp import CPFactors
from ._torch_specific import is_exporting
from .geometry import ConvGeometry, add_bias, conv_output_size, tap_windows

__all__ = ["factored", "scaled_columns_conv", "taps_conv"]


def _unfold_gemm(x: Tensor, weight: Tensor, col_scale: Tensor, geometry: ConvGeometry) -> Tensor:
    """``conv(x, W_base * col_scale_b)`` as im2col then one GEMM with the shared weight.

    ``col_scale`` is ``(B, Cin/groups, kh*kw)``: it scales the columns, not the weight,
    so the weight stays shared across the batch.
    """
    batch, _, height, width = x.shape
    cout, cin_g, kh, kw = weight.shape
    groups = geometry.groups
    h_out, w_out = geometry.output_size((height, width), (kh, kw))
    cols = F.unfold(x, (kh, kw), dilation=geometry.dilation, padding=geometry.padding, stride=geometry.stride)
    cols = cols.view(batch, groups, cin_g, kh * kw, -1) * col_scale.view(batch, 1, cin_g, kh * kw, 1)
    y = torch.matmul(
        weight.view(groups, cout // groups, cin_g * kh * kw), cols.view(batch, groups, cin_g * kh * kw, -1)
    )
    return y.reshape(batch, cout, h_out, w_out)


def scaled_columns_conv(x: Tensor, weight: Tensor, factors: CPFactors, r: int, geometry: ConvGeometry) -> Tensor:
    """Rank term ``r`` via im2col: ``phi (x) psi`` scale the columns, ``gamma`` the output."""
    gamma, phi, psi = factors
    assert psi is not None
    cin_g = weight.shape[1]
    scale = psi[:, r, None, :].expand(-1, cin_g, -1)
    if phi is not None:
        scale = phi[:, r, :, None] * scale
    y = _unfold_gemm(x, weight, scale, geometry)
    return y if gamma is None else y * gamma[:, r, :, None, None]


class _TapSum(torch.autograd.Function):
    """``y[b, t] = sum_k coef[b, k, t] * z[b, k, t, window_k]`` over the kernel taps ``k``.

    Hand-written backward: autograd through nine strided slices would allocate a full
    zero gradient of ``z`` per tap; this writes all taps into one buffer.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, coef: Tensor, index: list[Any]) -> Tensor:
        out: Optional[Tensor] = None
        for k, sl in enumerate(index):
            c = coef[:, k, :, None, None]
            out = z[sl] * c if out is None else out.addcmul_(z[sl], c)
        assert out is not None
        ctx.save_for_backward(z, coef)
        ctx.index = index
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:
        z, coef = ctx.saved_tensors
        gz = torch.zeros_like(z) if ctx.needs_input_grad[0] else None
        gc = torch.empty_like(coef) if ctx.needs_input_grad[1] else None
        for k, sl in enumerate(ctx.index):
            if gz is not None:
                gz[sl].addcmul_(grad, coef[:, k, :, None, None])
            if gc is not None:
                gc[:, k] = (z[sl] * grad).sum((-2, -1))
        return gz, gc, None


def taps_conv(x: Tensor, weight: Tensor, coef: Tensor, geometry: ConvGeometry) -> Tensor:
    """Stride-1, ungrouped ``conv(x, W_base * coef_b)`` with ``coef`` ``(B, kh*kw, Cout)``.

    One 1x1 convolution with the *shared* weight produces every tap's output (the FLOPs of
    the kxk convolution), then a per-sample weighted, shifted sum applies ``psi`` (and
    ``gamma``). Nothing batch-sized is built from the weight, which is what deep layers need.
    """
    batch = x.shape[0]
    cout, cin, kh, kw = weight.shape
    (ph, pw), (dh, dw) = geometry.padding, geometry.dilation
    z = F.conv2d(x, weight.permute(2, 3, 0, 1).reshape(kh * kw * cout, cin, 1, 1))
    if ph or pw:
        z = F.pad(z, (pw, pw, ph, ph))
    hp, wp = z.shape[-2:]
    out_size = conv_output_size((hp, wp), (kh, kw), (1, 1), (0, 0), (dh, dw))
    index = [
        (slice(None), t, slice(None), rows, cols)
        for t, rows, cols in tap_windows((kh, kw), (dh, dw), (1, 1), out_size)
    ]
    z = z.view(batch, kh * kw, cout, hp, wp)
    if is_exporting():
        # Traceable form (no custom Function, no in-place writes) for jit.trace and ONNX.
        return torch.stack([z[sl] * coef[:, k, :, None, None] for k, sl in enumerate(index)], 0).sum(0)
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
        xr = x if in_scale is None else x * in_scale[:, :, None, None]
        yr = geometry.conv2d(xr, weight)
        y = yr if out_scale is None else yr * out_scale[:, :, None, None]
        keep_yr = out_scale is not None and ctx.needs_input_grad[3]
        ctx.save_for_backward(x, weight, in_scale, out_scale, yr if keep_yr else None)
        ctx.geometry = geometry
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        x, weight, in_scale, out_scale, yr = ctx.saved_tensors
        g: ConvGeometry = ctx.geometry
        dt = grad.dtype  # the forward may have run under autocast
        x, weight = x.to(dt), weight.to(dt)
        need_x, need_w, need_in, need_out = ctx.needs_input_grad[:4]
        grad_out_scale = None
        if out_scale is not None:
            if need_out:
                grad_out_scale = (grad * yr.to(dt)).sum((2, 3))
            grad = grad * out_scale.to(dt)[:, :, None, None]
        xr = x if in_scale is None else x * in_scale.to(dt)[:, :, None, None]
        grad_xr, grad_w, _ = torch.ops.aten.convolution_backward(
            grad.contiguous(), xr, weight, None, list(g.stride), list(g.padding), list(g.dilation),
            False, [0, 0], g.groups, [need_x or need_in, need_w, False],
        )
        grad_x = grad_in_scale = None
        if grad_xr is not None:
            if in_scale is None:
                grad_x = grad_xr
            else:
                grad_x = grad_xr * in_scale.to(dt)[:, :, None, None] if need_x else None
                grad_in_scale = (grad_xr * x).sum((2, 3)) if need_in else None
        return grad_x, grad_w, grad_in_scale, grad_out_scale, None


def _rank_term(x: Tensor, weight: Tensor, factors: CPFactors, r: int, geometry: ConvGeometry) -> Tensor:
    gamma, phi, psi = factors
    cout, _, kh, kw = weight.shape
    if psi is not None and kh * kw > 1:
        if geometry.groups == 1 and geometry.unit_stride:
            # psi (and gamma) weight the taps; phi scales the input.
            xr = x if phi is None else x * phi[:, r, :, None, None]
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
    out: Optional[Tensor] = None
    for r in range(factors.rank):
        yr = _rank_term(x, weight, factors, r, geometry)
        out = yr if out is None else out + yr
    assert out is not None
    return add_bias(out, bias)
