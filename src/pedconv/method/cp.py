"""Eq. (1)-(2): the rank-R CP perturbation tensor and the per-sample weight it gives.

``A(x) = sum_r gamma_r(x) (x) phi_r(x) (x) psi_r(x)`` is a CP tensor over (output channels,
input channels of a filter, kernel taps), and ``W(x) = W_base * A(x)`` (Hadamard product).
The layers (:mod:`pedconv.method.pedconv_nd`) produce the factors; the execution strategies
(:mod:`pedconv.execution`) apply them without forming ``W(x)`` where they can, and use
:func:`compose_weight` where they do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["COMPONENTS", "CPFactors", "compose_weight", "compose_weight_backward", "cp_tensor"]

COMPONENTS: tuple[str, str, str] = ("gamma", "phi", "psi")
"""Component names in the order of ``g = [gamma; phi; psi]`` (Sec. 3)."""


class CPFactors(NamedTuple):
    """The factors of the CP tensor of Eq. (2), one row per sample and rank.

    ``gamma`` is ``(B, R, Cout)``, ``phi`` ``(B, R, Cin/groups)`` and ``psi`` ``(B, R, taps)``
    (``taps`` = the kernel's element count, ``kh*kw`` in 2-D). A ``None`` factor is all
    ones (a disabled component, Table 5a); at least one must be given.

    Example:
        >>> f = CPFactors(torch.ones(2, 1, 8), None, torch.ones(2, 1, 9))
        >>> f.batch, f.rank
        (2, 1)
    """

    gamma: Optional[Tensor]
    phi: Optional[Tensor]
    psi: Optional[Tensor]

    def _first(self) -> Tensor:
        for c in self:
            if c is not None:
                return c
        raise ValueError("at least one of gamma, phi, psi must be given")

    @property
    def batch(self) -> int:
        return self._first().shape[0]

    @property
    def rank(self) -> int:
        return self._first().shape[1]

    def dense(self, cout: int, cin_g: int, taps: int) -> tuple[Tensor, Tensor, Tensor]:
        """All three factors, the disabled ones as ones of the right size."""
        ref = self._first()
        batch, rank = ref.shape[:2]
        sizes = (cout, cin_g, taps)
        return tuple(  # type: ignore[return-value]
            c if c is not None else ref.new_ones(batch, rank, n) for c, n in zip(self, sizes)
        )

    def narrow(self, start: int, length: int) -> CPFactors:
        """The factors of samples ``start : start + length``."""
        return CPFactors(*(None if c is None else c[start : start + length] for c in self))


def cp_tensor(factors: CPFactors, weight_shape: torch.Size) -> Tensor:
    """``A(x) = sum_r gamma_r (x) phi_r (x) psi_r`` as ``(B, Cout, Cin/groups, taps)`` (Eq. 2)."""
    cout, cin_g = weight_shape[:2]
    taps = 1
    for k in weight_shape[2:]:
        taps *= k
    g, p, s = factors.dense(cout, cin_g, taps)
    # phi (x) psi first (small), then gamma: two broadcast products, one per factor pair.
    # (An einsum would reorder and copy its operands through several more ops.)
    ps = p[:, :, :, None] * s[:, :, None, :]  # (B, R, Cin/groups, taps)
    if factors.rank == 1:
        return g[:, 0, :, None, None] * ps[:, 0, None]
    batch, rank = g.shape[:2]
    # sum over r of gamma_r (x) (phi_r (x) psi_r): one batched matrix product.
    return torch.bmm(g.transpose(1, 2), ps.reshape(batch, rank, cin_g * taps)).view(batch, cout, cin_g, taps)


def compose_weight(
    weight: Tensor, gamma: Optional[Tensor], phi: Optional[Tensor], psi: Optional[Tensor]
) -> Tensor:
    """Per-sample weights of Eq. (2): ``W_b = W_base * sum_r gamma_r (x) phi_r (x) psi_r``.

    Args:
        weight: base weight ``(Cout, Cin/groups, *kernel)``.
        gamma: ``(B, R, Cout)`` or ``None`` (all ones).
        phi: ``(B, R, Cin/groups)`` or ``None``.
        psi: ``(B, R, prod(kernel))`` or ``None``.

    Returns:
        ``(B, Cout, Cin/groups, *kernel)``.

    Example:
        >>> w = torch.randn(4, 2, 3, 3)
        >>> compose_weight(w, torch.rand(5, 1, 4), None, torch.rand(5, 1, 9)).shape
        torch.Size([5, 4, 2, 3, 3])
    """
    factors = CPFactors(gamma, phi, psi)
    cp = cp_tensor(factors, weight.shape)
    return weight.unsqueeze(0) * cp.reshape(factors.batch, *weight.shape)


def compose_weight_backward(
    grad_w: Tensor, weight: Tensor, factors: CPFactors, needs: Sequence[bool], cp: Optional[Tensor] = None
) -> tuple[Optional[Tensor], ...]:
    """Gradients of ``W_b = W * sum_r g_r (x) p_r (x) s_r`` from ``dL/dW_b`` ``(B, Cout, Cin_g, taps)``.

    With ``G = dL/dW_b * W``, each component gradient contracts ``G`` with the other two
    components. They share one pass over ``G`` weighted by ``gamma`` (``G_gamma``, size of the
    input side), so the whole set is one elementwise product and four batched matrix products
    (two of them on the small ``G_gamma``), whatever the rank. ``cp``: the CP tensor of
    ``factors`` when the caller has it already; ``needs``: which of ``(weight, gamma, phi, psi)``.
    Returns those four gradients (``None`` where not needed or the factor is disabled).

    Example:
        >>> w, f = torch.randn(4, 2, 3, 3), CPFactors(torch.rand(5, 1, 4), None, torch.rand(5, 1, 9))
        >>> gw, gg, gp, gs = compose_weight_backward(torch.randn(5, 4, 2, 9), w, f, [True] * 4)
        >>> gw.shape, gg.shape, gp, gs.shape
        (torch.Size([4, 2, 3, 3]), torch.Size([5, 1, 4]), None, torch.Size([5, 1, 9]))
    """
    batch, cout, cin_g, kk = grad_w.shape
    rank = factors.rank
    g, p, s = factors.dense(cout, cin_g, kk)
    grad_weight = grad_gamma = grad_phi = grad_psi = None
    if needs[0]:
        cp = cp_tensor(factors, weight.shape) if cp is None else cp
        grad_weight = (grad_w * cp.view_as(grad_w)).sum(0).view_as(weight)
    need_gamma = needs[1] and factors.gamma is not None
    need_phi = needs[2] and factors.phi is not None
    need_psi = needs[3] and factors.psi is not None
    if not (need_gamma or need_phi or need_psi):
        return grad_weight, grad_gamma, grad_phi, grad_psi
    gw = (grad_w * weight.view(1, cout, cin_g, kk)).view(batch, cout, cin_g * kk)
    if need_gamma:
        # dgamma[b, r, o] = sum_(i,t) G[b, o, i, t] phi[b, r, i] psi[b, r, t]
        ps = (p[:, :, :, None] * s[:, :, None, :]).view(batch, rank, cin_g * kk)
        grad_gamma = torch.bmm(gw, ps.transpose(1, 2)).transpose(1, 2)
    if need_phi or need_psi:
        # G_gamma[b, r, i, t] = sum_o gamma[b, r, o] G[b, o, i, t]
        gg = torch.bmm(g, gw).view(batch * rank, cin_g, kk)
        if need_phi:
            grad_phi = torch.bmm(gg, s.reshape(batch * rank, kk, 1)).view(batch, rank, cin_g)
        if need_psi:
            grad_psi = torch.bmm(p.reshape(batch * rank, 1, cin_g), gg).view(batch, rank, kk)
    return grad_weight, grad_gamma, grad_phi, grad_psi
