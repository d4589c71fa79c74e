"""Eq. (1)-(2): the rank-R CP perturbation tensor and the per-sample weight it gives.

``A(x) = sum_r gamma_r(x) (x) phi_r(x) (x) psi_r(x)`` is a CP tensor over (output channels,
input channels of a filter, kernel taps), and ``W(x) = W_base * A(x)`` (Hadamard product).
The layers (:mod:`pedconv.method.pedconv_nd`) produce the factors; the execution strategies
(:mod:`pedconv.execution`) apply them without forming ``W(x)`` where they can, and use
:func:`compose_weight` where they do.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["COMPONENTS", "CPFactors", "compose_weight", "cp_tensor"]

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
