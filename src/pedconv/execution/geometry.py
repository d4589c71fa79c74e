"""Convolution geometry, in one place for every layer and strategy.

* :class:`ConvGeometry`: stride, padding, dilation and groups as one record (what
  ``F.conv2d`` takes besides its tensors).
* :func:`conv_output_size`: the output size formula of ``nn.Conv2d``.
* :func:`tap_windows`: for each kernel tap, the strided window of the padded input that it
  reads at every output position (the "sum over taps" form of a convolution).
* :func:`batch_as_groups_conv`: a different weight per sample as one grouped convolution.
* :func:`add_bias`: a per-channel bias on an ``(N, C, ...)`` output.
* :func:`conv_arguments`: the constructor arguments that rebuild an ``nn.Conv2d``'s shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ConvGeometry",
    "add_bias",
    "batch_as_groups_conv",
    "conv_arguments",
    "conv_output_size",
    "tap_windows",
]

_IntOrSeq = Union[int, Sequence[int]]


def _tuple2(value: _IntOrSeq) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    a, b = value
    return int(a), int(b)


@dataclass(frozen=True)
class ConvGeometry:
    """``stride``, integer ``padding``, ``dilation`` and ``groups`` of a 2-D convolution.

    Example:
        >>> g = ConvGeometry.make(stride=2, padding=1)
        >>> g.stride, g.padding, g.groups
        ((2, 2), (1, 1), 1)
        >>> g.output_size((56, 56), (3, 3))
        (28, 28)
    """

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @classmethod
    def make(
        cls, stride: _IntOrSeq = 1, padding: _IntOrSeq = 0, dilation: _IntOrSeq = 1, groups: int = 1
    ) -> ConvGeometry:
        """Build from ints or pairs, as ``F.conv2d`` accepts them."""
        return cls(_tuple2(stride), _tuple2(padding), _tuple2(dilation), int(groups))

    @property
    def unit_stride(self) -> bool:
        return self.stride == (1, 1)

    @property
    def no_padding(self) -> bool:
        return self.padding == (0, 0)

    def conv2d(self, x: Tensor, weight: Tensor, bias: Tensor | None = None, groups: int | None = None) -> Tensor:
        """``F.conv2d`` with this geometry (``groups`` overridable)."""
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation,
                        self.groups if groups is None else groups)

    def output_size(self, size: Sequence[int], kernel: Sequence[int]) -> tuple[int, int]:
        """Spatial output size for an input of spatial ``size`` (padding included)."""
        return conv_output_size(size, kernel, self.stride, self.padding, self.dilation)  # type: ignore[return-value]


def conv_output_size(
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """``floor((n + 2p - d(k - 1) - 1) / s) + 1`` per spatial dimension, as ``nn.Conv2d``.

    ``padding`` is per side; pass 0 for an input that is already padded.

    Example:
        >>> conv_output_size((7, 7), (3, 3), (2, 2), (1, 1), (1, 1))
        (4, 4)
    """
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)
    )


def tap_windows(
    kernel: Sequence[int], dilation: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> Iterator[tuple[int, slice, slice]]:
    """``(tap, rows, cols)`` for each tap of a 2-D kernel (row-major, as ``weight.view(-1)``).

    ``x[..., rows, cols]`` of a padded input is what the tap multiplies at every output
    position: ``conv(x)[p] = sum_t w[t] * x[..., rows_t, cols_t][p]``.

    Example:
        >>> [(t, r.start, c.start) for t, r, c in tap_windows((1, 2), (1, 1), (1, 1), (4, 4))]
        [(0, 0, 0), (1, 0, 1)]
    """
    (kh, kw), (dh, dw), (sh, sw), (ho, wo) = kernel, dilation, stride, out_size
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            yield i * kw + j, rows, cols


def batch_as_groups_conv(x: Tensor, weight: Tensor, geometry: ConvGeometry) -> Tensor:
    """Convolve sample ``b`` of ``x`` with ``weight[b]`` as one grouped convolution.

    Args:
        x: ``(B, Cin, H, W)``.
        weight: per-sample weights ``(B, Cout, Cin/groups, kh, kw)``.
        geometry: the convolution's geometry (``groups`` per sample).

    Returns:
        ``(B, Cout, H_out, W_out)``.
    """
    batch, cin, height, width = x.shape
    _, cout, cin_g, kh, kw = weight.shape
    y = geometry.conv2d(
        x.reshape(1, batch * cin, height, width),
        weight.reshape(batch * cout, cin_g, kh, kw),
        groups=batch * geometry.groups,
    )
    return y.reshape(batch, cout, y.shape[-2], y.shape[-1])


def conv_arguments(conv: nn.Module, layer: str, zero_padding_only: bool = False) -> dict[str, Any]:
    """Keyword arguments that rebuild ``conv``'s shape in another layer's constructor.

    Args:
        conv: an ``nn.Conv2d`` (exact type: subclasses such as timm's ``Conv2dSame`` change
            the forward pass).
        layer: the calling layer's name, for the error messages.
        zero_padding_only: refuse string padding and non-zero padding modes (layers that
            take integer zero padding only); otherwise ``padding_mode`` is included.

    Example:
        >>> args = conv_arguments(nn.Conv2d(2, 4, 3, padding=1), "MyConv2d")
        >>> args["kernel_size"], args["padding"], args["padding_mode"]
        ((3, 3), (1, 1), 'zeros')
    """
    if type(conv) is not nn.Conv2d:
        raise TypeError(
            f"{layer}.from_conv expects an nn.Conv2d (exact type), got {type(conv).__name__}; "
            "subclasses such as timm's Conv2dSame change the forward pass"
        )
    args: dict[str, Any] = dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    if zero_padding_only:
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(
                f"{layer}.from_conv supports integer zero padding only, got padding={conv.padding!r}, "
                f"padding_mode={conv.padding_mode!r}"
            )
    else:
        args["padding_mode"] = conv.padding_mode
    return args


def add_bias(y: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``y + bias`` over the channel dimension of an ``(N, C, ...)`` output."""
    return y if bias is None else y + bias.view(1, -1, *([1] * (y.dim() - 2)))
