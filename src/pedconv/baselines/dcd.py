"""DCD baseline: "Revisiting Dynamic Convolution via Matrix Decomposition", Li et al.,
ICLR 2021 (https://arxiv.org/abs/2103.08756).

The kernel is a static one scaled per output channel plus a low-rank dynamic residual,
``W(x) = Λ(x) W0 + P Φ(x) Q^T`` (the paper's Eq. 6 with the identity of the residual branch
kept: ``Φ(x) + I``), with ``Q`` (``Cin x L``) compressing the input channels to a latent space
of ``L`` channels and ``P`` (``Cout x L``) expanding back. The dynamic branch is
``pool -> FC(Cin p^2 -> S) -> self-gate -> {FC(S -> L^2) = Φ, FC(S -> Cout) -> Λ}`` with
``S = max(Cin p^2, L^2) // reduction``, where the pool is global (``p = 1``, the paper) or
``p x p`` (the official code's expanding pointwise convs). ``L`` follows one of the rules of
:data:`LATENT_RULES`: the paper's formula, or those of the official networks, which are what
their published sizes count. For a ``k x k`` kernel the residual is a 1x1 term at the kernel's
centre tap (the paper's k x k extension), so ``k`` must be odd. :class:`DCDLinear` is the
official networks' dynamic classifier. Deviations: ``Λ = 2 sigmoid(.)`` (1 at a zero logit, so
a converted conv can start exact) instead of a hard sigmoid, and no normalisation inside the
residual (so that the layer is a conv with a per-sample weight); in its place ``Φ``'s head
starts at zero and ``P``, ``Q`` variance-preserving, which keeps deep networks finite at
initialisation. Executed either in feature space
as the official code (the static conv, scaled, plus the low-rank residual on the centre-tap
inputs) or as each sample's weight and a batch-as-groups conv, whichever costs less.
"""

from __future__ import annotations

import math
from typing import Any, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..execution.geometry import batch_as_groups_conv
from .base import BaselineConv2d

__all__ = ["LATENT_RULES", "DCDConv2d", "DCDLinear", "dcd_latent_dim"]

# How L is chosen from the layer's shape: "paper" is the paper's L = floor(C / 2^floor(log2 sqrt C));
# the others are the official code's (github.com/liyunsheng13/dcd), which its published sizes
# count: "sqrt" = int(sqrt(Cin)) (ResNet-50's convs), "sqrt4" = int(sqrt(4 Cin)) (ResNet-18's),
# "pointwise" = MobileNetV2's pointwise rule (Cin p^2 / r and Cout / r, r = 8 when the conv
# expands and 2 otherwise, doubled until L^2 <= 2 Cin p^2; at least 4).
LATENT_RULES = ("paper", "sqrt", "sqrt4", "pointwise")


def dcd_latent_dim(channels: int, rule: str = "paper", *, out_channels: int = 0, pool: int = 1) -> int:
    """The latent dimension ``L`` of a DCD layer with ``channels`` inputs, by ``rule``
    (:data:`LATENT_RULES`); ``out_channels`` and ``pool`` matter to the "pointwise" rule only.

    Example:
        >>> dcd_latent_dim(64), dcd_latent_dim(512)
        (8, 32)
        >>> dcd_latent_dim(512, "sqrt4"), dcd_latent_dim(96, "pointwise", out_channels=576, pool=2)
        (45, 24)
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if rule == "paper":
        return max(1, channels // 2 ** math.floor(math.log2(math.sqrt(channels))))
    if rule in ("sqrt", "sqrt4"):
        return max(1, int(math.sqrt(channels * (4 if rule == "sqrt4" else 1))))
    if rule != "pointwise":
        raise ValueError(f"latent_dim rule must be one of {LATENT_RULES}, got {rule!r}")
    if out_channels < 1:
        raise ValueError(f"the 'pointwise' rule needs out_channels >= 1, got {out_channels}")
    inputs = channels * pool * pool
    r = 8 if channels < out_channels else 2
    dim = min(inputs // r, out_channels // r)
    while dim * dim > 2 * inputs:
        r *= 2
        dim = min(inputs // r, out_channels // r)
    return max(dim, 4)


class DCDConv2d(BaselineConv2d):
    """Conv whose weight is ``Λ(x) W0 + P (Φ(x) + I) Q^T`` (dynamic convolution decomposition).

    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``bias``: as in :class:`torch.nn.Conv2d` (integer padding; ``groups`` must be 1 and the
    kernel odd, since the residual mixes all input channels at the centre tap).

    Args:
        latent_dim: L, a number or a rule of :data:`LATENT_RULES` (default "paper").
        pool: the branch pools to ``pool x pool`` (1: global average pooling, the paper), or
            "expand": 2 where ``Cin < Cout`` and 1 elsewhere (the official MobileNetV2).
        reduction: the branch's hidden size is ``max(Cin pool^2, L^2) // reduction`` (16), at least 4.
        hidden: that hidden size, set directly (0: by ``reduction``).
        execution: "feature" (the residual on the features, as the official code), "weight" (each
            sample's kernel formed, one batch-as-groups conv) or "auto" (whichever needs fewer
            multiply-adds at the input's size). The same function either way.

    Example:
        >>> import torch
        >>> DCDConv2d(8, 16, 3, padding=1)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(self, *args: Any, latent_dim: Union[int, str] = "paper", pool: Union[int, str] = 1,
                 reduction: int = 16, hidden: int = 0, execution: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1:
            raise ValueError(f"DCDConv2d needs groups=1 (the residual mixes all channels), got groups={self.groups}")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"DCDConv2d needs an odd kernel_size (centre-tap residual), got {self.kernel_size}")
        dd, cin, cout = self.factory_kwargs, self.in_channels, self.out_channels
        if pool == "expand":
            pool = 2 if cin < cout else 1
        if isinstance(pool, str) or pool < 1:
            raise ValueError(f"pool must be an integer >= 1 or 'expand', got {pool!r}")
        if isinstance(latent_dim, str):
            latent_dim = dcd_latent_dim(cin, latent_dim, out_channels=cout, pool=pool)
        if latent_dim < 1 or reduction < 1 or hidden < 0:
            raise ValueError(f"latent_dim must be >= 1 or one of {LATENT_RULES}, reduction >= 1 and hidden >= 0; "
                             f"got latent_dim={latent_dim}, reduction={reduction}, hidden={hidden}")
        if execution not in ("auto", "feature", "weight"):
            raise ValueError(f"execution must be 'auto', 'feature' or 'weight', got {execution!r}")
        self.latent_dim = latent = latent_dim
        self.execution = execution
        self.pool = pool
        hidden = hidden or max(4, max(cin * pool * pool, latent * latent) // reduction)
        self.squeeze = nn.Linear(cin * pool * pool, hidden, bias=False, **dd)
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
        # The official code normalises Q^T x (BatchNorm) before Φ; without it, Q and P start so
        # that P Q^T keeps a unit input's variance (var 1/Cin per entry), as a 1x1 conv's
        # variance-preserving init would. (Kaiming on the (Cin, L) / (Cout, L) shapes counted
        # fan-in as L and made deep networks overflow in eval mode at initialisation.)
        nn.init.normal_(self.q, 0.0, 1 / math.sqrt(self.in_channels))
        nn.init.normal_(self.p, 0.0, 1 / math.sqrt(self.latent_dim))
        # Φ(x) grows with x, so Φ(x) Q^T x is quadratic in x: unnormalised, it compounds over a
        # deep network's layers (ResNet-50 overflowed in eval mode). Φ starts at 0 and is learnt.
        nn.init.zeros_(self.fc_phi.weight)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def _start_as(self, conv: nn.Conv2d) -> None:
        """``W0`` (and the bias) is ``conv``'s, ``Λ`` starts at 1 (its head's weight and bias at 0)
        and ``P`` at 0, so the layer computes exactly what ``conv`` did; ``P`` and the heads
        still get gradients, so the dynamic part grows in training."""
        self.weight.copy_(conv.weight)
        self.p.zero_()
        self.fc_scale.weight.zero_()
        assert self.fc_scale.bias is not None
        self.fc_scale.bias.zero_()
        self._copy_bias_of(conv)

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``Λ(x)`` as ``(B, Cout)`` and ``Φ(x)`` as ``(B, L, L)`` for an input ``(B, Cin, H, W)``."""
        pooled = x.mean(dim=(2, 3)) if self.pool == 1 else F.adaptive_avg_pool2d(x, self.pool).flatten(1)
        h = self.squeeze(pooled)
        h = h * F.hardsigmoid(self.gate(h))
        phi = self.fc_phi(h).view(-1, self.latent_dim, self.latent_dim)
        return 2 * torch.sigmoid(self.fc_scale(h)), phi

    def forward(self, x: Tensor) -> Tensor:
        scale, phi = self.coefficients(x)
        feature = self.execution == "feature" or (self.execution == "auto" and self._feature_is_cheaper(x))
        y = self._in_feature_space(x, scale, phi) if feature else self._with_sample_weights(x, scale, phi)
        return y if self.bias is None else y + self.bias[:, None, None]

    def _feature_is_cheaper(self, x: Tensor) -> bool:
        """Whether the residual costs fewer multiply-adds on the features (every output pixel)
        than folded into each sample's weight (per sample, independent of the map size)."""
        cin, cout, latent = self.in_channels, self.out_channels, self.latent_dim
        pixels = math.prod(self.geometry.output_size(x.shape[-2:], self.kernel_size))
        on_features = pixels * (cin * latent + latent * latent + latent * cout)
        in_weight = cout * cin * math.prod(self.kernel_size) + cout * latent * (latent + cin)
        return on_features <= in_weight

    def _in_feature_space(self, x: Tensor, scale: Tensor, phi: Tensor) -> Tensor:
        """As the official code: the static conv over the batch, scaled per output channel, plus
        ``P (Φ + I) Q^T`` on the inputs under the kernel's centre tap (no batch-as-groups conv)."""
        y = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation) * scale[:, :, None, None]
        z = torch.einsum("il,bihw->blhw", self.q, self._centre_taps(x, y.shape[-2:]))
        z = z + torch.einsum("blm,bmhw->blhw", phi, z)
        return y + torch.einsum("ol,blhw->bohw", self.p, z)

    def _with_sample_weights(self, x: Tensor, scale: Tensor, phi: Tensor) -> Tensor:
        """Each sample's ``W(x)`` formed, then one batch-as-groups conv (cheaper on large maps)."""
        eye = torch.eye(self.latent_dim, dtype=phi.dtype, device=phi.device)
        residual = torch.matmul(torch.matmul(self.p, phi + eye), self.q.t())  # (B, Cout, Cin)
        kh, kw = self.kernel_size
        w = (scale[:, :, None, None, None] * self.weight).clone()
        w[:, :, :, kh // 2, kw // 2] += residual
        return batch_as_groups_conv(x, w, self.geometry)

    def _centre_taps(self, x: Tensor, out_size: tuple[int, ...]) -> Tensor:
        """The input values under the kernel's centre tap at every output position."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        x = F.pad(x, (pw, pw, ph, ph))
        top, left = dh * (kh // 2), dw * (kw // 2)
        return x[:, :, top::sh, left::sw][:, :, :out_size[0], :out_size[1]]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, latent_dim={self.latent_dim}, pool={self.pool}"


class DCDLinear(nn.Module):
    """A linear layer with DCD's dynamic weight, the official DCD networks' classifier ("DYCls",
    ``L = 32`` and 32 hidden units): a 1x1 :class:`DCDConv2d` on the ``(B, C)`` features.

    Args:
        in_features: as in :class:`torch.nn.Linear`.
        out_features: as in :class:`torch.nn.Linear`.
        bias: as in :class:`torch.nn.Linear`.
        latent_dim: ``L`` of the dynamic branch (32).
        hidden: the dynamic branch's hidden units (32).

    Example:
        >>> import torch, torch.nn as nn
        >>> fc = nn.Linear(64, 10)
        >>> layer = DCDLinear.from_linear(fc)
        >>> x = torch.randn(2, 64)
        >>> layer(x).shape, torch.allclose(layer(x), fc(x), atol=1e-5)
        (torch.Size([2, 10]), True)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, latent_dim: int = 32,
                 hidden: int = 32, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.conv = DCDConv2d(in_features, out_features, 1, bias=bias, latent_dim=latent_dim, hidden=hidden,
                              device=device, dtype=dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, preserve_function: bool = True, **options: Any) -> DCDLinear:
        """A DCD layer with ``linear``'s shape; with ``preserve_function`` it computes what
        ``linear`` did until training moves it (as :meth:`DCDConv2d.from_conv`)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"DCDLinear.from_linear needs an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device,
                    dtype=w.dtype, **options)
        conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None,
                         device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w[:, :, None, None])
            if linear.bias is not None:
                assert conv.bias is not None
                conv.bias.copy_(linear.bias)
        layer.conv = DCDConv2d.from_conv(conv, preserve_function=preserve_function,
                                         latent_dim=layer.conv.latent_dim, hidden=layer.conv.squeeze.out_features)
        layer.train(linear.training)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"DCDLinear expects input (B, {self.in_features}), got {tuple(x.shape)}")
        return self.conv(x[:, :, None, None]).flatten(1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
