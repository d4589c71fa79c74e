"""Reading an ``nn.Conv2d``'s geometry for the baselines' ``from_conv`` constructors."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["conv_geometry"]


def conv_geometry(conv: nn.Module, layer: str) -> dict:
    """Keyword arguments that rebuild ``conv``'s shape in a baseline layer.

    The baselines take integer padding with zeros only (as their reference code does);
    anything else raises instead of silently computing something different.
    """
    if type(conv) is not nn.Conv2d:
        raise TypeError(f"{layer}.from_conv expects an nn.Conv2d (exact type), got {type(conv).__name__}")
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ValueError(
            f"{layer}.from_conv supports integer zero padding only, got padding={conv.padding!r}, "
            f"padding_mode={conv.padding_mode!r}"
        )
    return dict(
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
