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
    a scalar that folds into ``gamma``), else an im2col GEMM with the *shared* ``W_base``
    on columns scaled by ``phi (x) psi``. Extra work is proportional to the activations,
    nothing is batch-sized in the weight, and the graph does not depend on the batch size
    (used for tracing and ONNX export). Rank ``R`` costs ``R`` convolutions.
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

__all__ = ["STRATEGIES", "dynamic_conv2d", "select_strategy"]

_StrategyFn = Callable[..., Tensor]


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


def _materialize(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    w = compose_weight(weight, gamma, phi, psi)
    batch = x.shape[0]
    if batch == 1:
        return F.conv2d(x, w[0], bias, stride, padding, dilation, groups)
    cout, cin_g, kh, kw = weight.shape
    if kh == 1 and kw == 1 and groups == 1 and tuple(padding) == (0, 0):
        # 1x1: a batched GEMM per sample, no im2col and no grouped-conv overhead.
        if tuple(stride) != (1, 1):
            x = x[:, :, :: stride[0], :: stride[1]]
        h, wd = x.shape[-2:]
        y = torch.bmm(w.reshape(batch, cout, cin_g), x.reshape(batch, cin_g, h * wd))
        return _add_bias(y.reshape(batch, cout, h, wd), bias)
    return _add_bias(_batch_as_groups(x, w, stride, padding, dilation, groups), bias)


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


def _factored(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    cout, cin_g, kh, kw = weight.shape
    kernel_psi = psi is not None and kh * kw > 1
    out: Optional[Tensor] = None
    for r in range(_rank(gamma, phi, psi)):
        if kernel_psi:
            # phi and psi both act on the im2col columns.
            scale = psi[:, r, None, :]
            if phi is not None:
                scale = phi[:, r, :, None] * scale
            yr = _unfold_gemm(x, weight, scale.expand(-1, cin_g, -1), stride, padding, dilation, groups)
        else:
            # phi indexes the channels inside one group, so it repeats across groups.
            xr = x if phi is None else x * phi[:, r].repeat(1, groups)[:, :, None, None]
            yr = F.conv2d(xr, weight, None, stride, padding, dilation, groups)
        out_scale = gamma[:, r] if gamma is not None else None
        if psi is not None and not kernel_psi:
            out_scale = psi[:, r] if out_scale is None else out_scale * psi[:, r]  # (B, Cout) * (B, 1)
        if out_scale is not None:
            yr = yr * out_scale.reshape(out_scale.shape[0], -1, 1, 1)
        out = yr if out is None else out + yr
    assert out is not None
    return _add_bias(out, bias)


def _loop(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    return conv2d_per_sample(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)


STRATEGIES: dict[str, _StrategyFn] = {
    "factored": _factored,
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
        act_elems = batch * rank * (cin * kh * kw * out_pixels + cout * out_pixels)
    else:
        act_elems = batch * rank * (cin * height * width + cout * out_pixels)
    return "materialize" if weight_elems <= act_elems else "factored"


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
    if strategy == "auto":
        strategy = select_strategy(x, weight, gamma, phi, psi, stride)
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise ValueError(
            f"strategy must be 'auto' or one of {sorted(STRATEGIES)}, got {strategy!r}"
        ) from None
    return fn(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)
