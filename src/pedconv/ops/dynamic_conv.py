"""Execution of the per-sample PEDConv convolution.

The layer (:mod:`pedconv.layers.pedconv2d`) computes the CP components of Eq. (1)-(5);
everything about *how* the per-sample convolution of Eq. (3) is carried out lives here,
behind the single entry point :func:`dynamic_conv2d`. Every strategy is exact: they differ
only in cost, and :func:`select_strategy` picks the cheapest for the shapes at hand.

Eq. (3) can be regrouped as ``y_b = gamma_b * conv_{W_base * psi_b}(phi_b * x_b)``: ``phi``
scales input channels, ``gamma`` output channels, and only ``psi`` (``kh*kw`` numbers per
sample) really changes the kernel. The strategies exploit that in different ways:

``"factored"``
    Scale the input by ``phi`` and the output by ``gamma``; in between, the static
    convolution with ``W_base`` when ``psi`` is off or the kernel is 1x1 (``psi`` is then
    a scalar that folds into ``gamma``). With a kxk ``psi`` at stride 1 and no groups: a
    kxk convolution is the sum over its taps of 1x1 convolutions on shifted inputs, so
    one 1x1 convolution with the *shared* weight gives every tap's output and a per-sample
    weighted, shifted sum applies ``psi`` and ``gamma``. Strided or grouped: im2col
    columns scaled by ``phi (x) psi``, then a GEMM with the shared weight. Extra work is
    proportional to the activations, nothing batch-sized is built from the weight, and
    the graph does not depend on the batch size (used for tracing and ONNX export).
    Rank ``R`` costs ``R`` convolutions.
``"hybrid"``
    ``phi`` and ``gamma`` on the activations as in ``"factored"``, and only ``psi`` in a
    per-sample kernel ``W_base * psi_b`` run as a batch-as-groups convolution: one
    batch-sized weight instead of the three tensors the full composition costs.
``"materialize"``
    Build the per-sample weight ``(B, Cout, Cin/groups, kh, kw)`` once (cost proportional
    to the weight) and run one convolution: a plain convolution for ``B = 1``, a batched
    matrix product for 1x1 kernels, otherwise the batch folded into the groups. Rank ``R``
    is free beyond the weight composition. Depthwise layers stay depthwise.
``"naive"``
    The authors' formulation: full per-sample weight and a batch-as-groups convolution
    for every layer. Kept as the baseline the benchmarks compare against.
``"loop"``
    One ``F.conv2d`` per sample (the reference; slow).

A GPU kernel (Triton/CUDA) can be added as one more entry of :data:`STRATEGIES`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import compose_weight, conv2d_per_sample

from ._autocast import cast_for_autocast

__all__ = ["STRATEGIES", "dynamic_conv2d", "select_strategy"]

_StrategyFn = Callable[..., Tensor]

MAX_WEIGHT_ELEMENTS = 1 << 26
"""Largest per-sample weight block (elements) ``"materialize"`` builds at once; larger
batches are processed in chunks, so memory stays bounded whatever the batch size."""


def _rank(gamma: Optional[Tensor], phi: Optional[Tensor], psi: Optional[Tensor]) -> int:
    return next(c for c in (gamma, phi, psi) if c is not None).shape[1]


def _batch_as_groups(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """Convolve sample ``b`` of ``x`` with ``weight[b]`` using one grouped convolution."""
    batch, cin, height, width = x.shape
    _, cout, cin_g, kh, kw = weight.shape
    y = F.conv2d(
        x.reshape(1, batch * cin, height, width),
        weight.reshape(batch * cout, cin_g, kh, kw),
        None,
        stride,
        padding,
        dilation,
        batch * groups,
    )
    return y.reshape(batch, cout, y.shape[-2], y.shape[-1])


def _add_bias(y: Tensor, bias: Optional[Tensor]) -> Tensor:
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def _naive(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    w = compose_weight(weight, gamma, phi, psi)
    return _add_bias(_batch_as_groups(x, w, stride, padding, dilation, groups), bias)


def _per_sample_conv(x: Tensor, w: Tensor, stride, padding, dilation, groups) -> Tensor:  # type: ignore[no-untyped-def]
    """``conv(x[b], w[b])`` for every sample: a batched GEMM for 1x1 kernels, else batch-as-groups."""
    batch, cout, cin_g, kh, kw = w.shape
    if kh == 1 and kw == 1 and groups == 1 and tuple(padding) == (0, 0):
        # 1x1: one GEMM per sample straight on NCHW memory, no im2col and no layout reorder.
        if tuple(stride) != (1, 1):
            x = x[:, :, :: stride[0], :: stride[1]]
        h, wd = x.shape[-2:]
        y = torch.bmm(w.reshape(batch, cout, cin_g), x.reshape(batch, cin_g, h * wd))
        return y.reshape(batch, cout, h, wd)
    return _batch_as_groups(x, w, stride, padding, dilation, groups)


def _cp_grads(
    grad_w: Tensor, weight: Tensor, gamma: Optional[Tensor], phi: Optional[Tensor], psi: Optional[Tensor], needs: Sequence[bool]
) -> tuple[Optional[Tensor], ...]:
    """Gradients of ``W_b = W * sum_r g_r (x) p_r (x) s_r`` from ``dL/dW_b`` ``(B, Cout, Cin_g, kk)``.

    Each component gradient is a contraction of ``dL/dW_b * W`` with the other two
    components; they are written as batched matrix products (one pass over the
    batch-sized tensor each) rather than generic einsums.
    """
    batch, cout, cin_g, kk = grad_w.shape
    rank = _rank(gamma, phi, psi)
    ones = lambda n: grad_w.new_ones(batch, rank, n)  # noqa: E731
    g = gamma if gamma is not None else ones(cout)
    p = phi if phi is not None else ones(cin_g)
    s = psi if psi is not None else ones(kk)
    grad_weight = grad_gamma = grad_phi = grad_psi = None
    if needs[0]:
        cp = torch.einsum("brt,brs,brk->btsk", g, p, s)
        grad_weight = (grad_w * cp).sum(0).view_as(weight)
    if any(needs[1:]):
        gw = (grad_w * weight.view(1, cout, cin_g, kk)).view(batch, cout * cin_g, kk)
        # v[b, r, t, s] = sum_k gw[b, t, s, k] s[b, r, k]
        v = torch.bmm(gw, s.transpose(1, 2)).view(batch, cout, cin_g, rank).permute(0, 3, 1, 2)
        if needs[1] and gamma is not None:
            grad_gamma = (v * p[:, :, None, :]).sum(-1)
        if needs[2] and phi is not None:
            grad_phi = (v * g[:, :, :, None]).sum(-2)
        if needs[3] and psi is not None:
            gp = (g[:, :, :, None] * p[:, :, None, :]).reshape(batch, rank, cout * cin_g)
            grad_psi = torch.bmm(gp, gw)
    return grad_weight, grad_gamma, grad_phi, grad_psi


class _MaterializedConv(torch.autograd.Function):
    """Per-sample convolution whose per-sample weight is never kept for backward.

    Autograd would save the composed weight and the CP tensor, two batch-sized copies of
    the weight per layer; this saves only the input and the small components and rebuilds
    the weight in backward.
    """

    @staticmethod
    def forward(ctx, x, weight, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def,override]
        w = compose_weight(weight, gamma, phi, psi)
        ctx.save_for_backward(x, weight, gamma, phi, psi)
        ctx.conv = (stride, padding, dilation, groups)
        return _per_sample_conv(x, w, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def,override]
        x, weight, gamma, phi, psi = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        # Under autocast the forward ran in lower precision: do the backward in grad's dtype.
        dt = grad.dtype
        x = x.to(dt)
        weight, gamma, phi, psi = (t.to(dt) if t is not None else None for t in (weight, gamma, phi, psi))
        w = compose_weight(weight, gamma, phi, psi)
        batch, cout, cin_g, kh, kw = w.shape
        grad = grad.contiguous()
        if kh == 1 and kw == 1 and groups == 1 and tuple(padding) == (0, 0):
            xs = x[:, :, :: stride[0], :: stride[1]] if tuple(stride) != (1, 1) else x
            h, wd = xs.shape[-2:]
            g2 = grad.reshape(batch, cout, h * wd)
            grad_w = torch.bmm(g2, xs.reshape(batch, cin_g, h * wd).transpose(1, 2))
            grad_x = None
            if ctx.needs_input_grad[0]:
                gxs = torch.bmm(w.reshape(batch, cout, cin_g).transpose(1, 2), g2).view(batch, cin_g, h, wd)
                if tuple(stride) != (1, 1):
                    grad_x = x.new_zeros(x.shape)
                    grad_x[:, :, :: stride[0], :: stride[1]] = gxs
                else:
                    grad_x = gxs
        else:
            _, cin, height, width = x.shape
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad.reshape(1, batch * cout, grad.shape[-2], grad.shape[-1]),
                x.reshape(1, batch * cin, height, width),
                w.reshape(batch * cout, cin_g, kh, kw),
                None, list(stride), list(padding), list(dilation), False, [0, 0], batch * groups,
                [ctx.needs_input_grad[0], True, False],
            )
            if grad_x is not None:
                grad_x = grad_x.view(x.shape)
        grads = _cp_grads(grad_w.reshape(batch, cout, cin_g, kh * kw), weight, gamma, phi, psi, ctx.needs_input_grad[1:5])
        return (grad_x, *grads, None, None, None, None)


def _single_sample(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    """Batch of one, rank 1: fold each component into whichever side is smaller.

    ``psi`` goes into the kernel; ``phi`` into the kernel or the input, ``gamma`` into the
    kernel or the output, by element count. Deep layers thus touch their (large) weight once.
    """
    cout, cin_g, kh, kw = weight.shape
    out_pixels = ((x.shape[-2] - 1) // stride[0] + 1) * ((x.shape[-1] - 1) // stride[1] + 1)
    if psi is not None and kh * kw > 1 and weight.numel() > 4 * x.shape[1] * kh * kw * out_pixels:
        # Deep layers: the kernel is far larger than the im2col columns, so scale the
        # columns instead and read the weight once, as the static conv does.
        y = _scaled_columns_conv(x, weight, gamma, phi, psi, 0, stride, padding, dilation, groups)
        return _add_bias(y, bias)
    w = weight
    out_scale = gamma[0, 0] if gamma is not None else None
    if psi is not None:
        if kh * kw > 1:
            w = w * psi[0, 0].view(1, 1, kh, kw)
        else:
            out_scale = psi[0, 0] if out_scale is None else out_scale * psi[0, 0]
    if phi is not None:
        if x.numel() < w.numel():
            x = x * phi[0, 0].repeat(groups).view(1, -1, 1, 1)
        else:
            w = w * phi[0, 0].view(1, cin_g, 1, 1)
    if out_scale is not None and cout * out_pixels >= w.numel():
        w = w * out_scale.reshape(-1, 1, 1, 1).expand(cout, 1, 1, 1)
        out_scale = None
    if kh == 1 and kw == 1 and groups == 1 and tuple(padding) == (0, 0):
        # A plain GEMM: mkldnn would re-pack the fresh weight on every call.
        xs = x[:, :, :: stride[0], :: stride[1]] if tuple(stride) != (1, 1) else x
        y = torch.mm(w.view(cout, cin_g), xs.reshape(cin_g, -1)).view(1, cout, *xs.shape[-2:])
        if out_scale is None:
            return _add_bias(y, bias)
    else:
        y = F.conv2d(x, w, None if out_scale is not None else bias, stride, padding, dilation, groups)
    if out_scale is not None:
        y = y * out_scale.reshape(1, -1, 1, 1).expand(1, cout, 1, 1)
        y = _add_bias(y, bias)
    return y


def _materialize(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    if x.shape[0] == 1:
        if _rank(gamma, phi, psi) == 1:
            return _single_sample(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)
        w = compose_weight(weight, gamma, phi, psi)
        return F.conv2d(x, w[0], bias, stride, padding, dilation, groups)
    conv = (tuple(stride), tuple(padding), tuple(dilation), groups)
    chunk = max(1, MAX_WEIGHT_ELEMENTS // weight.numel())
    if x.shape[0] <= chunk:
        y = _MaterializedConv.apply(x, weight, gamma, phi, psi, *conv)
    else:
        # Bound the transient per-sample weight: at most MAX_WEIGHT_ELEMENTS at a time.
        parts = [
            _MaterializedConv.apply(
                x[i : i + chunk], weight,
                *(c[i : i + chunk] if c is not None else None for c in (gamma, phi, psi)), *conv,
            )
            for i in range(0, x.shape[0], chunk)
        ]
        y = torch.cat(parts, 0)
    return _add_bias(y, bias)


def _unfold_gemm(
    x: Tensor,
    weight: Tensor,
    col_scale: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """``conv(x, W_base * col_scale_b)`` as im2col then one GEMM with the shared weight.

    ``col_scale`` is ``(B, Cin/groups, kh*kw)``: it scales the columns, not the weight,
    so the weight stays shared across the batch.
    """
    batch, cin, height, width = x.shape
    cout, cin_g, kh, kw = weight.shape
    h_out = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    cols = cols.view(batch, groups, cin_g, kh * kw, -1) * col_scale.view(batch, 1, cin_g, kh * kw, 1)
    y = torch.matmul(weight.view(groups, cout // groups, cin_g * kh * kw), cols.view(batch, groups, cin_g * kh * kw, -1))
    return y.reshape(batch, cout, h_out, w_out)


def _scaled_columns_conv(x, weight, gamma, phi, psi, r, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    """Rank term ``r`` via im2col: ``phi (x) psi`` scale the columns, ``gamma`` the output."""
    cin_g = weight.shape[1]
    scale = psi[:, r, None, :].expand(-1, cin_g, -1)
    if phi is not None:
        scale = phi[:, r, :, None] * scale
    y = _unfold_gemm(x, weight, scale, stride, padding, dilation, groups)
    return y if gamma is None else y * gamma[:, r, :, None, None]


def _tap_slices(offsets: Sequence[tuple[int, int]], out_hw: tuple[int, int], stride: Sequence[int]):  # type: ignore[no-untyped-def]
    ho, wo = out_hw
    for k, (oh, ow) in enumerate(offsets):
        yield k, (
            slice(None), k, slice(None),
            slice(oh, oh + stride[0] * (ho - 1) + 1, stride[0]),
            slice(ow, ow + stride[1] * (wo - 1) + 1, stride[1]),
        )


class _TapSum(torch.autograd.Function):
    """``y[b, t] = sum_k coef[b, k, t] * z[b, k, t, window_k]`` over the kernel taps ``k``.

    Hand-written backward: autograd through nine strided slices would allocate a full
    zero gradient of ``z`` per tap; this writes all taps into one buffer.
    """

    @staticmethod
    def forward(ctx, z, coef, offsets, out_hw, stride):  # type: ignore[no-untyped-def,override]
        out: Optional[Tensor] = None
        for k, sl in _tap_slices(offsets, out_hw, stride):
            c = coef[:, k, :, None, None]
            out = z[sl] * c if out is None else out.addcmul_(z[sl], c)
        ctx.save_for_backward(z, coef)
        ctx.geometry = (offsets, out_hw, stride)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def,override]
        z, coef = ctx.saved_tensors
        gz = torch.zeros_like(z) if ctx.needs_input_grad[0] else None
        gc = torch.empty_like(coef) if ctx.needs_input_grad[1] else None
        for k, sl in _tap_slices(*ctx.geometry):
            if gz is not None:
                gz[sl].addcmul_(grad, coef[:, k, :, None, None])
            if gc is not None:
                gc[:, k] = (z[sl] * grad).sum((-2, -1))
        return gz, gc, None, None, None


def _taps_conv(
    x: Tensor,
    weight: Tensor,
    coef: Tensor,
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """Stride-1, ungrouped ``conv(x, W_base * coef_b)`` with ``coef`` ``(B, kh*kw, Cout)``.

    A kxk convolution is the sum over its taps of 1x1 convolutions on shifted inputs. One
    1x1 convolution with the *shared* weight produces every tap's output (same FLOPs as the
    kxk convolution), then a per-sample weighted, shifted sum applies ``psi`` (and ``gamma``).
    Nothing batch-sized is built from the weight, which is what deep layers need.
    """
    batch = x.shape[0]
    cout, cin, kh, kw = weight.shape
    z = F.conv2d(x, weight.permute(2, 3, 0, 1).reshape(kh * kw * cout, cin, 1, 1))
    if padding[0] or padding[1]:
        z = F.pad(z, (padding[1], padding[1], padding[0], padding[0]))
    hp, wp = z.shape[-2:]
    out_hw = (hp - dilation[0] * (kh - 1), wp - dilation[1] * (kw - 1))
    offsets = [(i * dilation[0], j * dilation[1]) for i in range(kh) for j in range(kw)]
    z = z.view(batch, kh * kw, cout, hp, wp)
    if _exporting():
        # Traceable form (no custom Function, no in-place writes) for jit.trace and ONNX.
        parts = [z[sl] * coef[:, k, :, None, None] for k, sl in _tap_slices(offsets, out_hw, (1, 1))]
        return torch.stack(parts, 0).sum(0)
    return _TapSum.apply(z, coef, offsets, out_hw, (1, 1))


class _ScaledConv(torch.autograd.Function):
    """``out_scale * conv(x * in_scale, W)`` keeping only ``x`` and the pre-scale output.

    Autograd would also keep ``x * in_scale``, an input-sized copy per layer; it is
    recomputed in backward instead (one elementwise pass).
    """

    @staticmethod
    def forward(ctx, x, weight, in_scale, out_scale, stride, padding, dilation, groups):  # type: ignore[no-untyped-def,override]
        xr = x if in_scale is None else x * in_scale[:, :, None, None]
        yr = F.conv2d(xr, weight, None, stride, padding, dilation, groups)
        y = yr if out_scale is None else yr * out_scale[:, :, None, None]
        keep_yr = out_scale is not None and ctx.needs_input_grad[3]
        ctx.save_for_backward(x, weight, in_scale, out_scale, yr if keep_yr else None)
        ctx.conv = (stride, padding, dilation, groups)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def,override]
        x, weight, in_scale, out_scale, yr = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
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
            grad.contiguous(), xr, weight, None, list(stride), list(padding), list(dilation),
            False, [0, 0], groups, [need_x or need_in, need_w, False],
        )
        grad_x = grad_in_scale = None
        if grad_xr is not None:
            if in_scale is None:
                grad_x = grad_xr
            else:
                grad_x = grad_xr * in_scale.to(dt)[:, :, None, None] if need_x else None
                grad_in_scale = (grad_xr * x).sum((2, 3)) if need_in else None
        return grad_x, grad_w, grad_in_scale, grad_out_scale, None, None, None, None


def _factored(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    cout, cin_g, kh, kw = weight.shape
    kernel_psi = psi is not None and kh * kw > 1
    use_taps = kernel_psi and groups == 1 and tuple(stride) == (1, 1)
    out: Optional[Tensor] = None
    for r in range(_rank(gamma, phi, psi)):
        if use_taps:
            # psi (and gamma) weight the taps; phi scales the input.
            xr = x if phi is None else x * phi[:, r, :, None, None]
            coef = psi[:, r, :, None].expand(-1, -1, cout)
            if gamma is not None:
                coef = coef * gamma[:, r, None, :]
            yr = _taps_conv(xr, weight, coef, padding, dilation)
        elif kernel_psi:
            yr = _scaled_columns_conv(x, weight, gamma, phi, psi, r, stride, padding, dilation, groups)
        else:
            # phi indexes the channels inside one group, so it repeats across groups;
            # a 1x1 psi is one scalar per sample that joins gamma on the output.
            in_scale = phi[:, r].repeat(1, groups) if phi is not None else None
            out_scale = gamma[:, r] if gamma is not None else None
            if psi is not None:
                out_scale = psi[:, r].expand(-1, cout) if out_scale is None else out_scale * psi[:, r]
            yr = _ScaledConv.apply(x, weight, in_scale, out_scale, tuple(stride), tuple(padding), tuple(dilation), groups)
        out = yr if out is None else out + yr
    assert out is not None
    return _add_bias(out, bias)


def _hybrid(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    cout, cin_g, kh, kw = weight.shape
    if psi is None or kh * kw == 1:
        return _factored(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)
    out: Optional[Tensor] = None
    for r in range(_rank(gamma, phi, psi)):
        xr = x if phi is None else x * phi[:, r].repeat(1, groups)[:, :, None, None]
        # Only psi enters the kernel: autograd keeps the small factors, not their product
        # beyond the convolution's own saved weight.
        w = weight.unsqueeze(0) * psi[:, r].reshape(-1, 1, 1, kh, kw)
        yr = _batch_as_groups(xr, w, stride, padding, dilation, groups)
        if gamma is not None:
            yr = yr * gamma[:, r, :, None, None]
        out = yr if out is None else out + yr
    assert out is not None
    return _add_bias(out, bias)


def _loop(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    return conv2d_per_sample(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)


STRATEGIES: dict[str, _StrategyFn] = {
    "factored": _factored,
    "hybrid": _hybrid,
    "materialize": _materialize,
    "naive": _naive,
    "loop": _loop,
}
"""Exact execution strategies by name; ``"auto"`` chooses among them."""


def _exporting() -> bool:
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or exporting()


def select_strategy(
    x: Tensor,
    weight: Tensor,
    gamma: Optional[Tensor],
    phi: Optional[Tensor],
    psi: Optional[Tensor],
    stride: Sequence[int] = (1, 1),
) -> str:
    """The strategy ``"auto"`` resolves to for these operands.

    While tracing or exporting, always ``"factored"``: its graph does not depend on the batch
    size. Otherwise compare the extra memory traffic of the two exact fast paths: the
    per-sample weight (``B * R * Cout * Cin/groups * kh * kw``) against the scaled
    activations ``"factored"`` touches.
    """
    if _exporting():
        return "factored"
    batch, cin, height, width = x.shape
    cout, cin_g, kh, kw = weight.shape
    rank = _rank(gamma, phi, psi)
    if batch == 1 or cin_g == 1:
        # One weight, or a per-sample depthwise kernel: as cheap as the static conv.
        return "materialize"
    out_pixels = ((height - 1) // stride[0] + 1) * ((width - 1) // stride[1] + 1)
    weight_elems = batch * rank * cout * cin_g * kh * kw
    if psi is not None and kh * kw > 1:
        if cin_g == cin and tuple(stride) == (1, 1):
            act_elems = batch * kh * kw * cout * height * width  # tap outputs
        else:
            act_elems = batch * cin * kh * kw * out_pixels  # im2col columns
    else:
        act_elems = batch * (cin * height * width + cout * out_pixels)  # scaled activations
    # "factored" repeats its convolution per rank; "materialize" composes ranks into one
    # weight. The 1/4 factor is calibrated on the ResNet-50/MobileNetV2 sweep of
    # `pedconv bench` (2-core x86-64 CPU): batch-sized weights cost more per element.
    return "materialize" if 4 * weight_elems <= rank * rank * act_elems else "factored"


def dynamic_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    gamma: Optional[Tensor],
    phi: Optional[Tensor],
    psi: Optional[Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    strategy: str = "auto",
) -> Tensor:
    """Per-sample convolution with ``W_b = W_base * sum_r gamma_r (x) phi_r (x) psi_r`` (Eq. 3).

    ``x`` must already carry any non-zero or asymmetric padding; ``padding`` is the
    symmetric zero padding left to the convolution. A ``None`` component means all ones.

    Args:
        x: input ``(B, Cin, H, W)``.
        weight: base weight ``(Cout, Cin/groups, kh, kw)``.
        bias: ``(Cout,)`` or ``None``.
        gamma: ``(B, R, Cout)`` or ``None``.
        phi: ``(B, R, Cin/groups)`` or ``None``.
        psi: ``(B, R, kh*kw)`` or ``None``.
        stride, padding, dilation, groups: as in ``F.conv2d`` (padding as integers).
        strategy: a key of :data:`STRATEGIES` or ``"auto"``.

    Returns:
        ``(B, Cout, H_out, W_out)``, identical (up to rounding) for every strategy.

    Example:
        >>> import torch
        >>> x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
        >>> g, p, s = torch.rand(2, 1, 6), torch.rand(2, 1, 4), torch.rand(2, 1, 9)
        >>> dynamic_conv2d(x, w, None, g, p, s, (1, 1), (1, 1), (1, 1), 1).shape
        torch.Size([2, 6, 8, 8])
    """
    if gamma is None and phi is None and psi is None:
        raise ValueError("dynamic_conv2d: at least one of gamma, phi, psi must be given")
    x, weight, bias, gamma, phi, psi = cast_for_autocast(x, weight, bias, gamma, phi, psi)  # type: ignore[assignment]
    # The base weight is small: a contiguous copy (e.g. of a channels_last weight) lets every
    # strategy reshape it freely.
    weight = weight.contiguous()
    if strategy == "auto":
        strategy = select_strategy(x, weight, gamma, phi, psi, stride)
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise ValueError(
            f"strategy must be 'auto' or one of {sorted(STRATEGIES)}, got {strategy!r}"
        ) from None
    return fn(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)
