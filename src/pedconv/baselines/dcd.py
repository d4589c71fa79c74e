"""DCD baseline: "Revisiting Dynamic Convolution via Matrix Decomposition", Li et al.,
ICLR 2021 (https://arxiv.org/abs/2103.08756).

The kernel is a static one scaled per output channel plus a low-rank dynamic residual,
``W(x) = Λ(x) W0 + P Φ(x) Q^T`` (the paper's Eq. 6 with the identity of the residual branch
kept: ``Φ(x) + I``), with ``Q`` (``Cin x L``) compressing the input channels to a latent space
of ``L = floor(Cin / 2^floor(log2 sqrt Cin))`` channels and ``P`` (``Cout x L``) expanding back.
The dynamic branch is ``GAP -> FC(Cin -> S) -> self-gate -> {FC(S -> L^2) = Φ,
FC(S -> Cout) -> Λ}`` with ``S = max(Cin, L^2) // 16``. For a ``k x k`` kernel the residual is
a 1x1 term at the kernel's centre tap (the paper's k x k extension), so ``k`` must be odd.
Deviations: ``Λ = 2 sigmoid(.)`` (1 at a zero logit, so a converted conv can start exact)
instead of a hard sigmoid, and no batch norm inside the residual (it cannot be folded into a
per-sample weight). Executed as one per-sample weight and a batch-as-groups convolution.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..execution.geometry import batch_as_groups_conv
from .base import BaselineConv2d

__all__ = ["DCDConv2d", "dcd_latent_dim"]


def dcd_latent_dim(channels: int) -> int:
    """The paper's latent dimension ``L = floor(C / 2^floor(log2 sqrt C))``.

    Example:
        >>> dcd_latent_dim(64), dcd_latent_dim(512)
        (8, 32)
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    return max(1, channels // 2 ** math.floor(math.log2(math.sqrt(channels))))


class DCDConv2d(BaselineConv2d):
    """Conv whose weight is ``Λ(x) W0 + P (Φ(x) + I) Q^T`` (dynamic convolution decomposition).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias:
            as in :class:`torch.nn.Conv2d` (integer padding; ``groups`` must be 1 and the
            kernel odd, since the residual mixes all input channels at the centre tap).
        latent_dim: L (default: :func:`dcd_latent_dim` of ``in_channels``).
        reduction: the branch's hidden size is ``max(Cin, L^2) // reduction`` (16), at least 4.

    Example:
        >>> import torch
        >>> DCDConv2d(8, 16, 3, padding=1)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(self, *args: Any, latent_dim: int = 0, reduction: int = 16, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1:
            raise ValueError(f"DCDConv2d needs groups=1 (the residual mixes all channels), got groups={self.groups}")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"DCDConv2d needs an odd kernel_size (centre-tap residual), got {self.kernel_size}")
        if latent_dim < 0 or reduction < 1:
            raise ValueError(f"latent_dim must be >= 0 and reduction >= 1, got {latent_dim}, {reduction}")
        dd, cin, cout = self.factory_kwargs, self.in_channels, self.out_channels
        self.latent_dim = latent = latent_dim or dcd_latent_dim(cin)
        hidden = max(4, max(cin, latent * latent) // reduction)
        self.squeeze = nn.Linear(cin, hidden, bias=False, **dd)
        self.gate = nn.Linear(hidden, hidden, bias=False, **dd)
        self.fc_phi = nn.Linear(hidden, latent * latent, bias=False, **dd)
        self.fc_scale = nn.Linear(hidden, cout, **dd)
        self.weight = nn.Parameter(torch.empty(cout, cin, *self.kernel_size, **dd))
        self.q = nn.Parameter(torch.empty(cin, latent, **dd))
        self.p = nn.Parameter(torch.empty(cout, latent, **dd))
        self.bias = nn.Parameter(torch.empty(cout, **dd)) if self.use_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.q, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.p, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, preserve_function: bool = True, **options: object) -> DCDConv2d:
        """A DCD layer with ``conv``'s geometry.

        With ``preserve_function`` ``W0`` (and the bias) is ``conv``'s, ``Λ`` starts at 1 (its
        head's weight and bias at 0) and ``P`` at 0, so the layer computes exactly what ``conv``
        did; ``P`` and the heads still get gradients, so the dynamic part grows in training.

        Example:
            >>> import torch, torch.nn as nn
            >>> conv = nn.Conv2d(8, 8, 3, padding=1)
            >>> x = torch.randn(2, 8, 5, 5)
            >>> torch.allclose(DCDConv2d.from_conv(conv)(x), conv(x), atol=1e-5)
            True
        """
        layer = cls._with_geometry_of(conv, **options)
        if preserve_function:
            with torch.no_grad():
                layer.weight.copy_(conv.weight)
                layer.p.zero_()
                layer.fc_scale.weight.zero_()
                assert layer.fc_scale.bias is not None
                layer.fc_scale.bias.zero_()
                if conv.bias is not None:
                    assert layer.bias is not None
                    layer.bias.copy_(conv.bias)
        return layer

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``Λ(x)`` as ``(B, Cout)`` and ``Φ(x)`` as ``(B, L, L)`` for an input ``(B, Cin, H, W)``."""
        h = self.squeeze(x.mean(dim=(2, 3)))
        h = h * torch.nn.functional.hardsigmoid(self.gate(h))
        phi = self.fc_phi(h).view(-1, self.latent_dim, self.latent_dim)
        return 2 * torch.sigmoid(self.fc_scale(h)), phi

    def forward(self, x: Tensor) -> Tensor:
        scale, phi = self.coefficients(x)
        eye = torch.eye(self.latent_dim, dtype=phi.dtype, device=phi.device)
        residual = torch.matmul(torch.matmul(self.p, phi + eye), self.q.t())  # (B, Cout, Cin)
        w = scale[:, :, None, None, None] * self.weight
        kh, kw = self.kernel_size
        w = w.clone()
        w[:, :, :, kh // 2, kw // 2] += residual
        y = batch_as_groups_conv(x, w, self.geometry)
        return y if self.bias is None else y + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, latent_dim={self.latent_dim}"
