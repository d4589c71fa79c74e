"""Execution of spatial-dynamic PEDConv (Sec. 4.6): a depthwise conv whose weight changes
at every output pixel.

At output pixel ``p`` of sample ``b`` the depthwise weight is
``W_p[c, t] = W_base[c, t] * sum_r gamma_r[c, p] * psi_r[t, p]`` (``phi`` of a depthwise
weight has length 1 and is folded into ``psi`` by the layer), so

    y[c, p] = sum_r gamma_r[c, p] * sum_t psi_r[t, p] * W_base[c, t] * x[c, p * s + o_t].

The paper implements this with ``unfold`` (``k*k`` copies of the input, plus per-pixel
weights of the same size). Here the sum over taps runs over *views* of the padded input,
one tap at a time, and a custom backward recomputes instead of storing: between forward
and backward only the input and the (unavoidable) per-pixel components are kept, and the
largest transient is ``R`` activation-sized accumulators. No per-pixel weight tensor is
ever formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from ._torch_specific import cast_for_autocast, is_exporting
from .geometry import conv_output_size, tap_windows

__all__ = ["spatial_depthwise_conv2d"]


_Taps = list[tuple[int, slice, slice]]


def _accumulate(x: Tensor, w: Tensor, psi: Tensor, taps: _Taps) -> Tensor:
    """``acc[b, r, c, p] = sum_t psi[b, r, t, p] * w[c, t] * x[b, c, p*s + o_t]``."""
    acc: Optional[Tensor] = None
    for t, rows, cols in taps:
        z = (x[:, :, rows, cols] * w[:, t].view(1, -1, 1, 1)).unsqueeze(1)  # (B, 1, C, Ho, Wo)
        term = psi[:, :, t].unsqueeze(2) * z  # (B, R, C, Ho, Wo)
        acc = term if acc is None else acc.add_(term)
    assert acc is not None
    return acc


class _SpatialDepthwise(torch.autograd.Function):
    """``y = sum_r gamma_r * acc_r`` (see :func:`_accumulate`) with a recomputing backward."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, w: Tensor, gamma: Optional[Tensor], psi: Tensor, kernel: tuple[int, int],
        stride: tuple[int, int], dilation: tuple[int, int], out_hw: tuple[int, int],
    ) -> Tensor:
        taps = list(tap_windows(kernel, dilation, stride, out_hw))
        acc = _accumulate(x, w, psi, taps)
        y = (acc * gamma).sum(1) if gamma is not None else acc.sum(1)
        ctx.save_for_backward(x, w, gamma, psi)
        ctx.taps = taps
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Optional[Tensor], ...]:
        x, w, gamma, psi = ctx.saved_tensors
        taps: _Taps = ctx.taps
        need_x, need_w, need_gamma, need_psi = ctx.needs_input_grad[:4]
        gy = gy.unsqueeze(1)  # (B, 1, C, Ho, Wo)
        grad_gamma = None
        if gamma is not None and need_gamma:
            grad_gamma = gy * _accumulate(x, w, psi, taps)
        u = gy * gamma if gamma is not None else gy  # dL/d acc_r, (B, R|1, C, Ho, Wo)
        grad_x = torch.zeros_like(x)
        grad_w = torch.zeros_like(w)
        grad_psi = torch.empty_like(psi)
        for t, rows, cols in taps:
            xt = x[:, :, rows, cols]
            if need_psi:
                grad_psi[:, :, t] = (u * (xt * w[:, t].view(1, -1, 1, 1)).unsqueeze(1)).sum(2)
            if need_x or need_w:
                v = (u * psi[:, :, t].unsqueeze(2)).sum(1)  # (B, C, Ho, Wo)
                if need_w:
                    grad_w[:, t] = (v * xt).sum((0, 2, 3))
                if need_x:
                    grad_x[:, :, rows, cols] += v * w[:, t].view(1, -1, 1, 1)
        return (grad_x if need_x else None, grad_w if need_w else None, grad_gamma,
                grad_psi if need_psi else None, None, None, None, None)


def spatial_depthwise_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    gamma: Optional[Tensor],
    psi: Optional[Tensor],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """Depthwise conv of an already padded ``x`` with a per-pixel rank-R weight.

    Args:
        x: padded input ``(B, Cin, Hp, Wp)``.
        weight: depthwise base weight ``(Cout, 1, kh, kw)``, ``Cout`` a multiple of ``Cin``.
        bias: ``(Cout,)`` or ``None``.
        gamma: ``(B, R, Cout, Ho, Wo)`` or ``None`` (all ones).
        psi: ``(B, R, kh*kw, Ho, Wo)`` or ``None`` (all ones).
        stride, dilation: pairs, as in ``F.conv2d``.

    Returns:
        ``(B, Cout, Ho, Wo)``.
    """
    x, weight, bias, gamma, psi = cast_for_autocast(x, weight, bias, gamma, psi)  # type: ignore[assignment]
    cout, _, kh, kw = weight.shape
    cin, hp, wp = x.shape[1:]
    if cout != cin:  # channel multiplier: output channel c reads input channel c // m
        x = x.repeat_interleave(cout // cin, dim=1)
    out_hw = conv_output_size((hp, wp), (kh, kw), stride, (0, 0), dilation)
    w = weight.reshape(cout, kh * kw)
    if psi is None:
        # Without psi the per-pixel weight is W_base * sum_r gamma_r: a static depthwise conv
        # scaled per pixel and channel.
        y = torch.nn.functional.conv2d(x, weight, None, stride, 0, dilation, cout)
        y = y * (gamma.sum(1) if gamma is not None else 1.0)
    else:
        if gamma is None:  # sum_r psi_r folds into one term
            psi = psi.sum(1, keepdim=True)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, w, gamma, psi)
        )
        if needs_grad and not is_exporting():
            y = _SpatialDepthwise.apply(x, w, gamma, psi, (kh, kw), tuple(stride), tuple(dilation), out_hw)
        else:  # inference, tracing and export: the same tap loop as plain (traceable) ops
            acc = _accumulate(x, w, psi, list(tap_windows((kh, kw), dilation, stride, out_hw)))
            y = (acc * gamma).sum(1) if gamma is not None else acc.sum(1)
    return y if bias is None else y + bias.view(1, -1, 1, 1)
