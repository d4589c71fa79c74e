"""Autocast for the dynamic convolutions' own arithmetic.

``torch.autocast`` casts the inputs of the ops it knows (convolutions, matmuls) but not of
elementwise ones, so scaling activations by float32 components, or adding a float32 bias,
would silently promote a bf16/fp16 network back to float32. The dynamic layers therefore
cast their operands once, up front, to the autocast dtype, as ``nn.Conv2d`` effectively does.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["autocast_dtype", "cast_for_autocast"]


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The active autocast dtype for ``device_type``, or ``None``."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4: per-device functions
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return None


def cast_for_autocast(x: Tensor, *tensors: Optional[Tensor]) -> tuple[Optional[Tensor], ...]:
    """``(x, *tensors)`` cast to the autocast dtype of ``x``'s device when autocast is on."""
    dtype = autocast_dtype(x.device.type)
    if dtype is None or not x.is_floating_point():
        return (x, *tensors)
    return tuple(None if t is None else t.to(dtype) for t in (x, *tensors))
