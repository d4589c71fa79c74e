"""Execution of the per-sample PEDConv convolution.

The layer (:mod:`pedconv.layers.pedconv2d`) computes the CP components of Eq. (1)-(5);
everything about *how* the per-sample convolution of Eq. (3) is carried out lives here,
behind the single entry point :func:`dynamic_conv2d`. Every strategy is exact: they differ
only in cost.

Strategies:

``"factored"``
    Eq. (3) rearranged: ``phi`` scales the input channels and ``gamma`` the output
    channels, so only ``psi`` touches the weight. Without ``psi`` (or for 1x1 kernels,
    where ``psi`` is one scalar per sample that folds into ``gamma``) the convolution is the
    static one on ``W_base``. Rank ``R`` costs ``R`` convolutions.
``"naive"``
    The authors' formulation: materialise the full per-sample weight
    ``(B, Cout, Cin/groups, kh, kw)`` and run one grouped convolution with the batch
    folded into the groups.
``"loop"``
    One ``F.conv2d`` per sample (the reference; slow).
``"auto"``
    Picks one of the above from the shapes.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch.nn.functional as F
from torch import Tensor

from .reference import compose_weight, conv2d_per_sample

__all__ = ["STRATEGIES", "dynamic_conv2d", "select_strategy"]

_StrategyFn = Callable[..., Tensor]


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


def _factored(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    cout, _, kh, kw = weight.shape
    pointwise_psi = psi is not None and kh * kw == 1
    rank = next(c for c in (gamma, phi, psi) if c is not None).shape[1]
    out: Optional[Tensor] = None
    for r in range(rank):
        xr = x
        if phi is not None:
            # phi indexes the channels inside one group, so it repeats across groups.
            xr = x * phi[:, r].repeat(1, groups)[:, :, None, None]
        if psi is None or pointwise_psi:
            yr = F.conv2d(xr, weight, None, stride, padding, dilation, groups)
        else:
            w = weight.unsqueeze(0) * psi[:, r].reshape(-1, 1, 1, kh, kw)
            yr = _batch_as_groups(xr, w, stride, padding, dilation, groups)
        scale = gamma[:, r] if gamma is not None else None
        if pointwise_psi:
            scale = psi[:, r] if scale is None else scale * psi[:, r]  # (B, Cout) * (B, 1)
        if scale is not None:
            yr = yr * scale.reshape(scale.shape[0], -1, 1, 1)
        out = yr if out is None else out + yr
    assert out is not None
    return _add_bias(out, bias)


def _loop(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    return conv2d_per_sample(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)


STRATEGIES: dict[str, _StrategyFn] = {
    "factored": _factored,
    "naive": _naive,
    "loop": _loop,
}
"""Exact execution strategies by name; ``"auto"`` chooses among them."""


def select_strategy(
    x: Tensor,
    weight: Tensor,
    gamma: Optional[Tensor],
    phi: Optional[Tensor],
    psi: Optional[Tensor],
) -> str:
    """The strategy ``"auto"`` resolves to for these operands."""
    rank = next(c for c in (gamma, phi, psi) if c is not None).shape[1]
    return "factored" if rank == 1 else "naive"


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
        strategy = select_strategy(x, weight, gamma, phi, psi)
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise ValueError(
            f"strategy must be 'auto' or one of {sorted(STRATEGIES)}, got {strategy!r}"
        ) from None
    return fn(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)
