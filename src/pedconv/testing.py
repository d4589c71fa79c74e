"""Test oracles: obviously correct, slow forms of the PEDConv forward pass.

These are the ground truth that every fast strategy in :mod:`pedconv.execution` and every
layer is tested against, kept apart from the runtime code (which never imports this
module, in the spirit of ``torch.testing``). They build the per-sample weight of Eq. (2)
literally and run one convolution per sample (or per pixel). Use them to check a new
strategy or layer of your own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .execution.geometry import CONV_FUNCTIONS, CONV_MODULES, ConvGeometry
from .method.base import PEDConvBase
from .method.cp import CPFactors, compose_weight
from .method.pedconv_nd import PEDConvNd

__all__ = [
    "conv2d_per_sample",
    "conv_per_sample",
    "randomize_generator",
    "reference_conv",
    "reference_forward",
    "spatial_conv2d_per_pixel",
]


def conv_per_sample(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry
) -> Tensor:
    """One ``F.conv1d/2d/3d`` per sample with the weight of Eq. (2) (:func:`compose_weight`).

    Example:
        >>> x, w = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3)
        >>> f = CPFactors(torch.rand(2, 1, 6), None, torch.rand(2, 1, 9))
        >>> conv_per_sample(x, w, None, f, ConvGeometry.make(padding=1)).shape
        torch.Size([2, 6, 5, 5])
    """
    w = compose_weight(weight, *factors)
    g = geometry
    conv = CONV_FUNCTIONS[g.ndim]
    outs = [conv(x[b : b + 1], w[b], bias, g.stride, g.padding, g.dilation, g.groups) for b in range(x.shape[0])]
    return torch.cat(outs, 0)


conv2d_per_sample = conv_per_sample
"""The former name of :func:`conv_per_sample` (it serves every dimension)."""


def spatial_conv2d_per_pixel(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors,
    stride: Sequence[int], dilation: Sequence[int],
) -> Tensor:
    """Spatial-dynamic PEDConv, one output pixel at a time (Sec. 4.6).

    At every output pixel the depthwise weight of Eq. (2) is composed from that pixel's
    components and applied to that pixel's receptive field of the (already padded) input.

    Args:
        x: padded input ``(B, Cin, Hp, Wp)``.
        weight: depthwise base weight ``(Cout, 1, kh, kw)``.
        factors: ``(gamma, phi, psi)``, each ``(B, R, Cout | 1 | kh*kw, Ho, Wo)`` or ``None``.
    """
    cout, _, kh, kw = weight.shape
    batch, _, _, ho, wo = next(c for c in factors if c is not None).shape
    mult = cout // x.shape[1]
    y = x.new_zeros(batch, cout, ho, wo)
    for b in range(batch):
        for i in range(ho):
            for j in range(wo):
                at = [None if c is None else c[b : b + 1, :, :, i, j] for c in factors]
                w = compose_weight(weight, *at)[0]  # (Cout, 1, kh, kw)
                r0, c0 = i * stride[0], j * stride[1]
                patch = x[b, :, r0 : r0 + dilation[0] * (kh - 1) + 1 : dilation[0],
                          c0 : c0 + dilation[1] * (kw - 1) + 1 : dilation[1]]
                for c in range(cout):
                    y[b, c, i, j] = (w[c, 0] * patch[c // mult]).sum()
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def randomize_generator(layer: PEDConvBase, scale: float = 0.5) -> None:
    """Give a PEDConv layer's (zero-initialised) heads random values, so that the
    components differ between inputs."""
    with torch.no_grad():
        layer.generator.head.weight.normal_(0.0, scale)
        layer.generator.head.bias.normal_(0.0, scale)


def reference_conv(layer: PEDConvBase, dtype: torch.dtype) -> nn.Conv1d | nn.Conv2d | nn.Conv3d:
    """The ``nn.Conv1d/2d/3d`` with ``layer``'s geometry (its own padding code included) and bias,
    whose weight a reference loop sets to each sample's (or pixel's) weight of Eq. (2).

    Example:
        >>> import pedconv
        >>> reference_conv(pedconv.PEDConv2d(4, 6, 3, padding="same", padding_mode="reflect"), torch.float64)
        Conv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), padding=same, padding_mode=reflect)
    """
    conv: nn.Conv1d | nn.Conv2d | nn.Conv3d = CONV_MODULES[layer.ndim](  # type: ignore[assignment]
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
        dtype=dtype,
    )
    if layer.bias is not None and isinstance(conv.bias, Tensor):
        with torch.no_grad():
            conv.bias.copy_(layer.bias)
    return conv


def reference_forward(layer: PEDConvNd, x: Tensor) -> Tensor:
    """A PEDConv1d/2d/3d's eval output computed by a per-sample ``nn.ConvNd`` with the weight of
    Eq. (2) (``layer.dynamic_weight(x)``); padding is handled by ``nn.ConvNd`` itself.

    Example:
        >>> import pedconv
        >>> layer = pedconv.PEDConv2d(4, 6, 3, padding=1).eval()
        >>> randomize_generator(layer)
        >>> x = torch.randn(2, 4, 5, 5)
        >>> torch.allclose(layer(x), reference_forward(layer, x), atol=1e-5)
        True
    """
    weights = layer.dynamic_weight(x)
    conv = reference_conv(layer, x.dtype)
    outs = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            conv.weight.copy_(weights[b])
            outs.append(conv(x[b : b + 1]))
    return torch.cat(outs)
