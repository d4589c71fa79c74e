"""What the baselines share: ``nn.Conv2d``'s signature (integer zero padding, as their
reference code takes), conversion from an ``nn.Conv2d`` and the static-conv cost."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar, Union

import torch
import torch.nn as nn
from torch.nn.common_types import _size_2_t
from torch.nn.modules.utils import _pair

from ..execution.geometry import ConvGeometry, conv_arguments

__all__ = ["BaselineConv2d"]

_Layer = TypeVar("_Layer", bound="BaselineConv2d")


class BaselineConv2d(nn.Module):
    """Base of the baseline layers: stores and checks ``nn.Conv2d``'s shape arguments.

    Subclasses take ``(*args, <their keyword options>, **kwargs)`` and pass ``args`` and
    ``kwargs`` here, so the signature ``(in_channels, out_channels, kernel_size, stride=1,
    padding=0, dilation=1, groups=1, bias=True, device=None, dtype=None)`` is written once.
    ``factory_kwargs`` holds ``device`` / ``dtype`` for the parameters they create, and
    ``use_bias`` whether they create a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t = 0,
        dilation: _size_2_t = 1,
        groups: int = 1,
        bias: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{type(self).__name__}: groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels} (all >= 1)"
            )
        if isinstance(padding, str):
            raise ValueError(f"{type(self).__name__} takes integer zero padding, got padding={padding!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size: tuple[int, int] = _pair(kernel_size)
        self.stride: tuple[int, int] = _pair(stride)
        self.padding: tuple[int, int] = _pair(padding)
        self.dilation: tuple[int, int] = _pair(dilation)
        self.geometry = ConvGeometry.make(stride, padding, dilation, groups)
        self.use_bias = bias
        self.factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}

    @classmethod
    def from_conv(cls: type[_Layer], conv: nn.Conv2d, *, preserve_function: bool = True, **options: Any) -> _Layer:
        """A layer with ``conv``'s geometry (an ``nn.Conv2d`` with integer zero padding) and the
        baseline's ``options``.

        With ``preserve_function`` it starts as ``conv`` (:meth:`_start_as`: each baseline's
        parameters set so that it computes what ``conv`` did, while its dynamic part still gets
        gradients); otherwise its parameters are freshly initialised.

        Example:
            >>> import torch, torch.nn as nn
            >>> from pedconv.baselines import DCDConv2d, DyConv2d, WeightNetConv2d
            >>> conv = nn.Conv2d(8, 8, 3, padding=1)
            >>> x = torch.randn(2, 8, 5, 5)
            >>> [torch.allclose(cls.from_conv(conv)(x), conv(x), atol=1e-5)
            ...  for cls in (DCDConv2d, DyConv2d, WeightNetConv2d)]
            [True, True, True]
        """
        layer = cls._with_geometry_of(conv, **options)
        if preserve_function:
            with torch.no_grad():
                layer._start_as(conv)
        return layer

    def _start_as(self, conv: nn.Conv2d) -> None:
        """Sets this layer's parameters (under ``no_grad``) so that it computes what ``conv``
        does; a baseline that cannot refuses (see :meth:`from_conv`)."""
        raise ValueError(f"{type(self).__name__}.from_conv cannot preserve the function of a conv; "
                         "use preserve_function=False")

    def _copy_bias_of(self, conv: nn.Conv2d) -> None:
        """``conv``'s bias into this layer's (when ``conv`` has one), broadcast over its kernels."""
        if conv.bias is not None:
            bias = getattr(self, "bias", None)
            assert bias is not None, f"{type(self).__name__} was built without the bias that {conv} has"
            bias.copy_(conv.bias.expand_as(bias))

    @classmethod
    def _with_geometry_of(cls: type[_Layer], conv: nn.Module, **options: Any) -> _Layer:
        """A fresh layer with ``conv``'s shape (an ``nn.Conv2d`` with integer zero padding)."""
        layer = cls(**conv_arguments(conv, cls.__name__, zero_padding_only=True), **options)
        layer.train(conv.training)
        return layer

    def macs(self, output_shape: Sequence[int], measured: Callable[[nn.Module], int]) -> int:
        """All of it as measured: the baselines' attention, kernel mixing and convolution
        are matrix products and convolutions that the counter sees."""
        return measured(self)

    def static_macs(self, output_shape: Sequence[int]) -> int:
        """Multiply-adds of one static convolution of this shape."""
        pixels = (output_shape[0] if len(output_shape) == 4 else 1) * output_shape[-2] * output_shape[-1]
        return pixels * self.out_channels * (self.in_channels // self.groups) * math.prod(self.kernel_size)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.use_bias}"
        )
