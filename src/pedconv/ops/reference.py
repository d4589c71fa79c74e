"""Obviously-correct, slow forms of the PEDConv forward pass.

These are the ground truth that every fast strategy in :mod:`pedconv.ops.dynamic_conv`
is tested against. They materialise the per-sample weight of Eq. (2) literally and
run one ``F.conv2d`` per sample.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["compose_weight", "conv2d_per_sample", "spatial_conv2d_per_pixel"]


def _rank_and_batch(*components: Optional[Tensor]) -> tuple[int, int]:
    for c in components:
        if c is not None:
            return c.shape[0], c.shape[1]
    raise ValueError("at least one of gamma, phi, psi must be given")


def compose_weight(
    weight: Tensor,
    gamma: Optional[Tensor],
    phi: Optional[Tensor],
    psi: Optional[Tensor],
) -> Tensor:
    """Per-sample weights of Eq. (2): ``W_b = W_base * sum_r gamma_r (x) phi_r (x) psi_r``.

    Args:
        weight: base weight ``(Cout, Cin/groups, kh, kw)``.
        gamma: ``(B, R, Cout)`` or ``None`` (treated as all ones).
        phi: ``(B, R, Cin/groups)`` or ``None``.
        psi: ``(B, R, kh*kw)`` or ``None``.

    Returns:
        ``(B, Cout, Cin/groups, kh, kw)``.
    """
    batch, rank = _rank_and_batch(gamma, phi, psi)
    cout, cin_g, kh, kw = weight.shape
    ones = lambda n: weight.new_ones(batch, rank, n)  # noqa: E731
    g = gamma if gamma is not None else ones(cout)
    p = phi if phi is not None else ones(cin_g)
    s = psi if psi is not None else ones(kh * kw)
    # Sum over the rank of outer products: the CP tensor A(x) of Sec. 3.
    cp = torch.einsum("brt,brs,brk->btsk", g, p, s)
    return weight.unsqueeze(0) * cp.reshape(batch, cout, cin_g, kh, kw)


def conv2d_per_sample(
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
) -> Tensor:
    """One ``F.conv2d`` per sample with the weight of :func:`compose_weight`."""
    w = compose_weight(weight, gamma, phi, psi)
    outs = [
        F.conv2d(x[b : b + 1], w[b], bias, stride, padding, dilation, groups)
        for b in range(x.shape[0])
    ]
    return torch.cat(outs, 0)


def spatial_conv2d_per_pixel(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    gamma: Optional[Tensor],
    phi: Optional[Tensor],
    psi: Optional[Tensor],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """Spatial-dynamic PEDConv, one output pixel at a time (Sec. 4.6).

    At every output pixel the depthwise weight of Eq. (2) is composed from that pixel's
    components and applied to that pixel's receptive field of the (already padded) input.

    Args:
        x: padded input ``(B, Cin, Hp, Wp)``.
        weight: depthwise base weight ``(Cout, 1, kh, kw)``.
        gamma, phi, psi: ``(B, R, Cout | 1 | kh*kw, Ho, Wo)`` or ``None``.
    """
    cout, _, kh, kw = weight.shape
    ref = next(c for c in (gamma, phi, psi) if c is not None)
    batch, _, _, ho, wo = ref.shape
    mult = cout // x.shape[1]
    y = x.new_zeros(batch, cout, ho, wo)
    for b in range(batch):
        for i in range(ho):
            for j in range(wo):
                def at(c: Optional[Tensor]) -> Optional[Tensor]:
                    return None if c is None else c[b : b + 1, :, :, i, j]

                w = compose_weight(weight, at(gamma), at(phi), at(psi))[0]  # (Cout, 1, kh, kw)
                r0, c0 = i * stride[0], j * stride[1]
                patch = x[b, :, r0 : r0 + dilation[0] * (kh - 1) + 1 : dilation[0],
                          c0 : c0 + dilation[1] * (kw - 1) + 1 : dilation[1]]
                for c in range(cout):
                    y[b, c, i, j] = (w[c, 0] * patch[c // mult]).sum()
    return y if bias is None else y + bias.view(1, -1, 1, 1)
