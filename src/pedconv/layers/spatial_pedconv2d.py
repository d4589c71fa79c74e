"""Spatial-dynamic PEDConv (Sec. 4.6, Table 6): components per pixel on a depthwise base.

The generator of Eq. (7) is applied *without pooling* to the channel vector at every
output location, so each pixel gets its own rank-R CP perturbation of a depthwise base
weight ``W_base`` (``Cout x 1 x k x k``). For a depthwise weight ``phi`` (over the
``Cin/groups = 1`` input channels of a filter) is one number per rank and pixel; it is
kept for uniformity with :class:`~pedconv.PEDConv2d` and folded into ``psi`` at execution.

Choices where the paper is silent (documented in the README):

* Strided layers: the generator reads the input average-pooled to the output resolution
  (identity at stride 1), so each output pixel's components see its whole footprint.
* Sampling (Eq. 5): independent Gaussian noise per pixel, rank and entry (``sigma`` as in
  :class:`~pedconv.PEDConv2d`); evaluation uses the mean.
* Info-max (Eq. 6): the decoder reconstructs each pixel's (detached) generator input from
  that pixel's sampled ``g``; the loss is the MSE over all pixels.

The fast execution is :func:`pedconv.ops.spatial_depthwise_conv2d`; the per-pixel
reference is :func:`pedconv.ops.spatial_conv2d_per_pixel`.
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.common_types import _size_2_t

from ..ops import spatial_depthwise_conv2d
from .pedconv2d import COMPONENTS, PEDConv2d, _SigmaT

__all__ = ["SpatialPEDConv2d"]


class SpatialPEDConv2d(PEDConv2d):
    r"""Depthwise convolution whose weight is reparameterised per sample *and* per pixel.

    At output pixel ``p``: ``W_p(x) = W_base * sum_r gamma_r(x_p) (x) phi_r(x_p) (x) psi_r(x_p)``
    with the components generated from the input's channel vector ``x_p`` at that pixel.
    The signature is ``nn.Conv2d``'s with ``groups`` fixed to ``in_channels`` (depthwise;
    ``out_channels`` a multiple of ``in_channels``), plus the options of
    :class:`~pedconv.PEDConv2d` (no ``strategy``: there is one execution).

    Example:
        >>> import torch
        >>> conv = SpatialPEDConv2d(16, 16, 3, padding=1)
        >>> conv(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: Union[str, _size_2_t] = 0,
        dilation: _size_2_t = 1,
        groups: Optional[int] = None,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        rank: int = 1,
        components: Union[str, Iterable[str]] = COMPONENTS,
        reduction: int = 16,
        min_hidden: int = 4,
        variational: bool = True,
        sigma: _SigmaT = 0.1,
        infomax: bool = True,
        activation: str = "scaled_sigmoid",
    ) -> None:
        if groups is not None and groups != in_channels:
            raise ValueError(
                f"SpatialPEDConv2d reparameterises a depthwise base conv: groups must be "
                f"in_channels={in_channels} (or None), got groups={groups}"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, in_channels, bias,
            padding_mode, device, dtype, rank=rank, components=components, reduction=reduction,
            min_hidden=min_hidden, variational=variational, sigma=sigma, infomax=infomax,
            activation=activation,
        )
        if self._pad_lrtb is None:  # the tap loop always reads an explicitly padded input
            top, left = self._conv_padding
            self._pad_lrtb = (left, left, top, top)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, *, preserve_function: Optional[bool] = None, **options: object
    ) -> "SpatialPEDConv2d":
        """Build from ``conv``'s geometry; a depthwise ``conv`` also gives its weight.

        A dense or grouped ``conv`` (e.g. a ResNet 3x3 conv, as in Table 6) has no
        depthwise equivalent: its depthwise base is freshly initialised (the bias is
        copied), and ``preserve_function=True`` raises. A depthwise ``conv`` is converted
        like :meth:`PEDConv2d.from_conv`. ``None`` (default) preserves when possible.
        """
        if type(conv) is not nn.Conv2d:
            raise TypeError(f"from_conv expects an nn.Conv2d (exact type), got {type(conv).__name__}")
        depthwise = conv.groups == conv.in_channels
        if preserve_function is None:
            preserve_function = depthwise
        if not depthwise and preserve_function:
            raise ValueError(
                f"a conv with groups={conv.groups} and in_channels={conv.in_channels} cannot keep its "
                "function on a depthwise base; pass preserve_function=False to start the depthwise "
                "base from scratch"
            )
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride, padding=conv.padding, dilation=conv.dilation,  # type: ignore[arg-type]
            bias=conv.bias is not None, padding_mode=conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype, **options,  # type: ignore[arg-type]
        )
        with torch.no_grad():
            if depthwise:
                scale = layer.initial_cp_value() if preserve_function else 1.0
                layer.weight.copy_(conv.weight / scale)
            if conv.bias is not None:
                assert layer.bias is not None
                layer.bias.copy_(conv.bias)
        layer.train(conv.training)
        return layer

    def _out_hw(self, x: Tensor) -> tuple[int, int]:
        left, right, top, bottom = self._pad_lrtb  # type: ignore[misc]
        (kh, kw), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        return (
            (x.shape[-2] + top + bottom - dh * (kh - 1) - 1) // sh + 1,
            (x.shape[-1] + left + right - dw * (kw - 1) - 1) // sw + 1,
        )

    def _generate(self, x: Tensor, sample: bool) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Per-pixel components ``(B, R, n, Ho, Wo)``, sampled ``g`` and generator input (NHWC)."""
        out_hw = self._out_hw(x)
        if min(out_hw) < 1:
            raise ValueError(
                f"SpatialPEDConv2d: input of spatial size {tuple(x.shape[-2:])} is smaller than the "
                f"dilated kernel {self.kernel_size} (dilation {self.dilation}) after padding"
            )
        # Eq. (7) without pooling: the channel vector at each output location.
        feats = F.adaptive_avg_pool2d(x, out_hw).permute(0, 2, 3, 1)
        g, values = self._sample(feats, sample)
        batch, ho, wo, _ = values.shape
        parts = values.split([self.rank * self._sizes[c] for c in self.component_names], dim=-1)
        comps = {
            c: p.reshape(batch, ho, wo, self.rank, self._sizes[c]).permute(0, 3, 4, 1, 2)
            for c, p in zip(self.component_names, parts)
        }
        return comps, g, feats

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        comps, g, feats = self._generate(x, sample=self.training)
        self._record_infomax(g, feats)  # per pixel: each pixel's generator input
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        x = F.pad(x, self._pad_lrtb, mode=mode)  # type: ignore[arg-type]
        gamma, phi, psi = comps.get("gamma"), comps.get("phi"), comps.get("psi")
        if phi is not None:  # length 1 per rank: fold it into psi (or gamma)
            if psi is not None:
                psi = psi * phi
            else:
                gamma = phi if gamma is None else gamma * phi
        y = spatial_depthwise_conv2d(x, self.weight, self.bias, gamma, psi, self.stride, self.dilation)
        return y.squeeze(0) if unbatched else y

    @torch.no_grad()
    def components(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        """Eval-mode per-pixel ``(gamma, phi, psi)``: ``(B, R, Cout | 1 | kh*kw, Ho, Wo)``."""
        self._check_input(x)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        comps, _, _ = self._generate(x, sample=False)
        ho, wo = self._out_hw(x)
        return tuple(  # type: ignore[return-value]
            comps[c] if c in comps else x.new_ones(x.shape[0], self.rank, self._sizes[c], ho, wo)
            for c in COMPONENTS
        )

    @torch.no_grad()
    def dynamic_weight(self, x: Tensor) -> Tensor:
        """Per-pixel weights ``(B, Ho, Wo, Cout, 1, kh, kw)`` in eval mode (for inspection:
        the forward pass never forms them)."""
        gamma, phi, psi = self.components(x)
        cp = torch.einsum("brchw,brshw,brthw->bhwcst", gamma, phi, psi)
        return self.weight * cp.reshape(*cp.shape[:4], 1, *self.kernel_size)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", spatial=True"
