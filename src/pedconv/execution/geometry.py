"""Convolution geometry, in one place for every layer and strategy, in 1, 2 or 3 dimensions.

* :class:`ConvGeometry`: stride, padding, dilation and groups as one record (what
  ``F.conv1d/2d/3d`` take besides their tensors); its length is the number of spatial dims.
* :func:`conv_output_size`: the output size formula of ``nn.Conv1d/2d/3d``.
* :func:`tap_windows`: for each kernel tap, the strided window of the padded input that it
  reads at every output position (the "sum over taps" form of a convolution).
* :func:`batch_as_groups_conv`: a different weight per sample as one grouped convolution.
* :func:`add_bias`: a per-channel bias on an ``(N, C, ...)`` output.
* :func:`conv_arguments`: the constructor arguments that rebuild an ``nn.ConvNd``'s shape.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CONV_FUNCTIONS",
    "CONV_MODULES",
    "ConvGeometry",
    "add_bias",
    "batch_as_groups_conv",
    "conv_arguments",
    "conv_output_size",
    "per_channel",
    "spatial_dims",
    "spatial_numel",
    "stride_index",
    "tap_windows",
]

_IntOrSeq = Union[int, Sequence[int]]

CONV_FUNCTIONS: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
"""``F.conv1d/2d/3d`` by number of spatial dimensions."""

CONV_MODULES: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
"""``nn.Conv1d/2d/3d`` by number of spatial dimensions."""


def _ntuple(value: _IntOrSeq, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    items = tuple(int(v) for v in value)
    if len(items) != n:
        raise ValueError(f"expected an int or {n} ints, got {value!r}")
    return items


@dataclass(frozen=True)
class ConvGeometry:
    """``stride``, integer ``padding``, ``dilation`` and ``groups`` of a 1-, 2- or 3-D convolution.

    Example:
        >>> g = ConvGeometry.make(stride=2, padding=1)
        >>> g.stride, g.padding, g.groups, g.ndim
        ((2, 2), (1, 1), 1, 2)
        >>> g.output_size((56, 56), (3, 3))
        (28, 28)
        >>> ConvGeometry.make(stride=2, ndim=3).stride
        (2, 2, 2)
    """

    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1

    @classmethod
    def make(
        cls, stride: _IntOrSeq = 1, padding: _IntOrSeq = 0, dilation: _IntOrSeq = 1, groups: int = 1, ndim: int = 2
    ) -> ConvGeometry:
        """Build from ints or ``ndim``-tuples, as ``F.conv{ndim}d`` accepts them."""
        return cls(_ntuple(stride, ndim), _ntuple(padding, ndim), _ntuple(dilation, ndim), int(groups))

    @property
    def ndim(self) -> int:
        """The number of spatial dimensions."""
        return len(self.stride)

    @property
    def unit_stride(self) -> bool:
        return all(s == 1 for s in self.stride)

    @property
    def no_padding(self) -> bool:
        return not any(self.padding)

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None = None, groups: int | None = None) -> Tensor:
        """``F.conv{ndim}d`` with this geometry (``groups`` overridable)."""
        return CONV_FUNCTIONS[self.ndim](x, weight, bias, self.stride, self.padding, self.dilation,
                                         self.groups if groups is None else groups)

    def output_size(self, size: Sequence[int], kernel: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for an input of spatial ``size`` (padding included)."""
        return conv_output_size(size, kernel, self.stride, self.padding, self.dilation)

    def as_2d(self) -> ConvGeometry:
        """A 1-D geometry as the 2-D one over ``(1, L)`` inputs (exact: a 1-D convolution is a 2-D
        convolution with a one-row kernel); other geometries unchanged."""
        if self.ndim != 1:
            return self
        return ConvGeometry((1, *self.stride), (0, *self.padding), (1, *self.dilation), self.groups)


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
) -> Iterator[tuple[Any, ...]]:
    """``(tap, *windows)`` for each tap of a kernel of any dimension (row-major, as ``weight.view(-1)``).

    ``x[..., *windows]`` of a padded input is what the tap multiplies at every output
    position: ``conv(x)[p] = sum_t w[t] * x[..., *windows_t][p]``. In 2-D that is
    ``(tap, rows, cols)``.

    Example:
        >>> [(t, r.start, c.start) for t, r, c in tap_windows((1, 2), (1, 1), (1, 1), (4, 4))]
        [(0, 0, 0), (1, 0, 1)]
    """
    for tap, offsets in enumerate(itertools.product(*(range(k) for k in kernel))):
        yield (tap, *(
            slice(i * d, i * d + s * (n - 1) + 1, s) for i, d, s, n in zip(offsets, dilation, stride, out_size)
        ))


def batch_as_groups_conv(x: Tensor, weight: Tensor, geometry: ConvGeometry) -> Tensor:
    """Convolve sample ``b`` of ``x`` with ``weight[b]`` as one grouped convolution.

    Args:
        x: ``(B, Cin, *spatial)``.
        weight: per-sample weights ``(B, Cout, Cin/groups, *kernel)``.
        geometry: the convolution's geometry (``groups`` per sample).

    Returns:
        ``(B, Cout, *spatial_out)``.
    """
    batch, cin = x.shape[:2]
    _, cout, cin_g = weight.shape[:3]
    y = geometry.conv(
        x.reshape(1, batch * cin, *x.shape[2:]),
        weight.reshape(batch * cout, cin_g, *weight.shape[3:]),
        groups=batch * geometry.groups,
    )
    return y.reshape(batch, cout, *y.shape[2:])


def conv_arguments(conv: nn.Module, layer: str, zero_padding_only: bool = False, ndim: int = 2) -> dict[str, Any]:
    """Keyword arguments that rebuild ``conv``'s shape in another layer's constructor.

    Args:
        conv: an ``nn.Conv{ndim}d`` (exact type: subclasses such as timm's ``Conv2dSame``
            change the forward pass).
        layer: the calling layer's name, for the error messages.
        zero_padding_only: refuse string padding and non-zero padding modes (layers that
            take integer zero padding only); otherwise ``padding_mode`` is included.
        ndim: the number of spatial dimensions the calling layer takes.

    Example:
        >>> args = conv_arguments(nn.Conv2d(2, 4, 3, padding=1), "MyConv2d")
        >>> args["kernel_size"], args["padding"], args["padding_mode"]
        ((3, 3), (1, 1), 'zeros')
    """
    expected = CONV_MODULES[ndim]
    if type(conv) is not expected:
        raise TypeError(
            f"{layer}.from_conv expects an nn.{expected.__name__} (exact type), got {type(conv).__name__}; "
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


def spatial_numel(shape: Sequence[int]) -> int:
    """The number of spatial positions of an ``(N, C, *spatial)`` shape.

    >>> spatial_numel((8, 3, 7, 5))
    35
    """
    return math.prod(shape[2:])


def per_channel(t: Tensor, ndim: int) -> Tensor:
    """``(B, C)`` values as ``(B, C, 1, ..., 1)``, broadcastable over ``ndim`` spatial dims.

    >>> import torch
    >>> per_channel(torch.ones(2, 3), 3).shape
    torch.Size([2, 3, 1, 1, 1])
    """
    return t[(Ellipsis,) + (None,) * ndim]


def spatial_dims(t: Tensor) -> tuple[int, ...]:
    """The spatial dimensions of an ``(N, C, *spatial)`` tensor, for reductions.

    >>> import torch
    >>> spatial_dims(torch.ones(2, 3, 4, 5))
    (2, 3)
    """
    return tuple(range(2, t.dim()))


def stride_index(geometry: ConvGeometry) -> tuple[slice, ...]:
    """The index of the positions a strided 1x1 convolution reads: every ``stride``-th along
    each spatial dim of an ``(N, C, *spatial)`` tensor.

    >>> stride_index(ConvGeometry.make(stride=2))[2:]
    (slice(None, None, 2), slice(None, None, 2))
    """
    return (slice(None), slice(None), *(slice(None, None, s) for s in geometry.stride))
