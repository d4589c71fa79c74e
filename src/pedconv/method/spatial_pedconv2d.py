"""Spatial-dynamic PEDConv (Sec. 4.6, Table 6): components per pixel on a depthwise base.

The generator of Eq. (7) is applied *without pooling* to the channel vector at every
output location, so each pixel gets its own rank-R CP perturbation of a depthwise base
weight ``W_base`` (``Cout x 1 x k x k``). For a depthwise weight ``phi`` (over the
``Cin/groups = 1`` input channels of a filter) is one number per rank and pixel; it is
kept for uniformity with :class:`~pedconv.PEDConv2d` and folded into ``psi`` at execution.

Choices where the paper is silent (documented in the docs, "Models and their size"):

* Strided layers: the generator reads the input average-pooled to the output resolution
  (the identity at stride 1 with 'same' padding), so each output pixel's components see its whole footprint.
* Sampling (Eq. 5): independent Gaussian noise per pixel, rank and entry (``sigma`` as in
  :class:`~pedconv.PEDConv2d`); evaluation uses the mean.
* Info-max (Eq. 6): the decoder reconstructs each pixel's (detached) generator input from
  that pixel's sampled ``g``; the loss is the MSE over all pixels.

The fast execution is :func:`pedconv.execution.spatial_depthwise_conv2d`; the per-pixel
reference is :func:`pedconv.testing.spatial_conv2d_per_pixel`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.common_types import _size_2_t

from ..execution.geometry import conv_arguments
from ..execution.spatial import spatial_depthwise_conv2d
from .base import PEDConvBase, PEDConvOptions, SigmaT
from .cp import COMPONENTS, CPFactors

__all__ = ["SpatialPEDConv2d"]


class SpatialPEDConv2d(PEDConvBase):
    r"""Depthwise convolution whose weight is reparameterised per sample *and* per pixel.

    At output pixel ``p``: ``W_p(x) = W_base * sum_r gamma_r(x_p) (x) phi_r(x_p) (x) psi_r(x_p)``
    with the components generated from the input's channel vector ``x_p`` at that pixel.
    The signature is ``nn.Conv2d``'s with ``groups`` fixed to ``in_channels`` (depthwise;
    ``out_channels`` a multiple of ``in_channels``), plus the options of
    :class:`~pedconv.PEDConv2d` (no ``strategy``: there is one execution). A sibling of
    :class:`~pedconv.PEDConv2d` (both derive from :class:`~pedconv.method.base.PEDConvBase`),
    not a subclass: it reads the input per pixel, not pooled.

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
        sigma: SigmaT = 0.1,
        infomax: bool = True,
        activation: str = "scaled_sigmoid",
    ) -> None:
        if groups is not None and groups != in_channels:
            raise ValueError(
                f"SpatialPEDConv2d reparameterises a depthwise base conv: groups must be "
                f"in_channels={in_channels} (or None), got groups={groups}"
            )
        options = PEDConvOptions(rank, components, reduction, min_hidden, variational, sigma, infomax, activation)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, in_channels, bias, padding_mode, options,
            device, dtype,
        )

    def _resolve_padding(self) -> tuple[Optional[tuple[int, ...]], tuple[int, ...]]:
        # The tap loop always reads an explicitly padded input.
        explicit, (top, left) = super()._resolve_padding()
        return (explicit or (left, left, top, top)), (0, 0)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, *, preserve_function: Optional[bool] = None, **options: object
    ) -> SpatialPEDConv2d:
        """Build from ``conv``'s geometry; a depthwise ``conv`` also gives its weight.

        A dense or grouped ``conv`` (e.g. a ResNet 3x3 conv, as in Table 6) has no
        depthwise equivalent: its depthwise base is freshly initialised (the bias is
        copied), and ``preserve_function=True`` raises. A depthwise ``conv`` is converted
        like :meth:`PEDConv2d.from_conv`. ``None`` (default) preserves when possible.
        """
        arguments = conv_arguments(conv, cls.__name__)
        depthwise = conv.groups == conv.in_channels
        if preserve_function is None:
            preserve_function = depthwise
        if not depthwise and preserve_function:
            raise ValueError(
                f"a conv with groups={conv.groups} and in_channels={conv.in_channels} cannot keep its "
                "function on a depthwise base; pass preserve_function=False to start the depthwise "
                "base from scratch"
            )
        arguments.pop("groups")
        layer = cls(**arguments, **options)  # type: ignore[arg-type]
        return layer._load_conv(conv, preserve_function, copy_weight=depthwise)

    def _generate(self, x: Tensor, sample: bool) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Per-pixel components ``(B, R, n, Ho, Wo)``, sampled ``g`` and generator input (NHWC)."""
        ho, wo = self.output_size(x)
        out_hw = (ho, wo)
        # Eq. (7) without pooling: the channel vector at each output location.
        feats = F.adaptive_avg_pool2d(x, out_hw).permute(0, 2, 3, 1)
        g, parts = self._sample(feats, sample)
        batch, ho, wo, _ = g.shape
        comps = {
            c: p.reshape(batch, ho, wo, self.rank, self.factor_sizes[c]).permute(0, 3, 4, 1, 2)
            for c, p in parts.items()
        }
        return comps, g, feats

    def forward(self, x: Tensor) -> Tensor:
        x, unbatched, exporting = self._batched(x)
        empty = self._empty_batch_output(x, exporting)
        if empty is not None:
            return empty
        comps, g, feats = self._generate(x, sample=self.training)
        self._record_infomax(g, feats)  # per pixel: each pixel's generator input
        x = self.pad_input(x)
        gamma, phi, psi = comps.get("gamma"), comps.get("phi"), comps.get("psi")
        if phi is not None:  # length 1 per rank: fold it into psi (or gamma)
            if psi is not None:
                psi = psi * phi
            else:
                gamma = phi if gamma is None else gamma * phi
        y = spatial_depthwise_conv2d(x, self.weight, self.bias, gamma, psi, self.stride, self.dilation)
        return y.squeeze(0) if unbatched else y

    @torch.no_grad()
    def cp_factors(self, x: Tensor) -> CPFactors:
        """Eval-mode per-pixel ``(gamma, phi, psi)``: ``(B, R, Cout | 1 | kh*kw, Ho, Wo)``."""
        x, _, _ = self._batched(x)
        comps, _, _ = self._generate(x, sample=False)
        ho, wo = self.output_size(x)
        return CPFactors(*self._all_factors(comps, lambda n: x.new_ones(x.shape[0], self.rank, n, ho, wo)))

    @torch.no_grad()
    def dynamic_weight(self, x: Tensor) -> Tensor:
        """Per-pixel weights ``(B, Ho, Wo, Cout, 1, kh, kw)`` in eval mode (for inspection:
        the forward pass never forms them)."""
        gamma, phi, psi = self.cp_factors(x)
        cp = torch.einsum("brchw,brshw,brthw->bhwcst", gamma, phi, psi)
        return self.weight * cp.reshape(*cp.shape[:4], 1, *self.kernel_size)

    def macs(self, output_shape: Sequence[int], measured: Callable[[nn.Module], int]) -> int:
        """Generator (as measured, per pixel) + per pixel: forming the rank-R depthwise
        weight (``2R`` per entry) and applying it (1 per entry)."""
        taps = self.static_macs(output_shape)
        return measured(self.generator) + 2 * self.rank * taps + taps

    def extra_repr(self) -> str:
        return super().extra_repr() + ", spatial=True"
