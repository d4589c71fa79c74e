"""The annealed attention temperatures of DY-Conv and KernelWarehouse, set once per step.

Both baselines soften their kernel attention early in training and sharpen it on a schedule:
DY-Conv divides its logits by a temperature going 30 -> 1, KernelWarehouse mixes in a uniform
attention with weight ``tau`` going 1 -> 0. The training loop calls
:func:`anneal_attention_temperatures` after every optimizer step; checkpoints record the value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Union

import torch.nn as nn

from .dyconv import DyConv2d, dyconv_temperature
from .kernelwarehouse import KWConv2d, kw_temperature

__all__ = ["anneal_attention_temperatures", "annealed_attention_layers"]


def annealed_attention_layers(model: nn.Module) -> Iterator[Union[DyConv2d, KWConv2d]]:
    """The DY-Conv and KernelWarehouse layers of ``model`` (those with an annealed ``temperature``).

    >>> list(annealed_attention_layers(nn.Linear(1, 1)))
    []
    """
    return (m for m in model.modules() if isinstance(m, (DyConv2d, KWConv2d)) and hasattr(m, "temperature"))


def anneal_attention_temperatures(model: nn.Module, epoch: float, anneal_epochs: float) -> float:
    """Set every DY-Conv layer's temperature (30 -> 1, :func:`dyconv_temperature`) and every
    KernelWarehouse layer's ``tau`` (1 -> 0, :func:`kw_temperature`) for fractional ``epoch``,
    both annealed over ``anneal_epochs``; returns the value set (KW's when the model has KW layers).

    >>> anneal_attention_temperatures(nn.Linear(1, 1), 5.0, 10.0)
    15.5
    """
    t = dyconv_temperature(epoch, anneal_epochs=anneal_epochs)
    tau = kw_temperature(epoch, anneal_epochs=anneal_epochs)
    has_kw = False
    for m in annealed_attention_layers(model):
        has_kw = has_kw or isinstance(m, KWConv2d)
        m.temperature = tau if isinstance(m, KWConv2d) else t
    return tau if has_kw else t
