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

__all__ = ["compose_weight", "conv2d_per_sample"]


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
