"""Shared test helpers: the obviously-correct per-sample reference built on nn.Conv2d."""

import torch
import torch.nn as nn

import pedconv


def randomize_generator(layer: pedconv.PEDConv2d, scale: float = 0.5) -> None:
    """Give the (zero-initialised) heads random values so components differ per input."""
    with torch.no_grad():
        layer.generator.head.weight.normal_(0.0, scale)
        layer.generator.head.bias.normal_(0.0, scale)


def reference_forward(layer: pedconv.PEDConv2d, x: torch.Tensor) -> torch.Tensor:
    """Per-sample nn.Conv2d with the weight of Eq. (2): padding handled by nn.Conv2d itself."""
    weights = layer.dynamic_weight(x)
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
        dtype=x.dtype,
    )
    outs = []
    with torch.no_grad():
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
        for b in range(x.shape[0]):
            conv.weight.copy_(weights[b])
            outs.append(conv(x[b : b + 1]))
    return torch.cat(outs)
