"""PyTorch-specific switches the execution strategies consult, in one place.

* Export detection: :func:`is_exporting` is true under ``torch.jit.trace``, the
  TorchScript-based ONNX exporter and ``torch.export`` (the dynamo ONNX exporter), where
  only batch-independent, traceable paths may run.
* Autocast for the dynamic convolutions' own arithmetic:

``torch.autocast`` casts the inputs of the ops it knows (convolutions, matmuls) but not of
elementwise ones, so scaling activations by float32 components, or adding a float32 bias,
would silently promote a bf16/fp16 network back to float32. The dynamic layers therefore
cast their operands once, up front, to the autocast dtype, as ``nn.Conv2d`` effectively does.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["autocast_dtype", "cast_for_autocast", "is_exporting"]


def is_exporting() -> bool:
    """True while tracing (``torch.jit.trace``) or exporting (ONNX, ``torch.export``)."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return (
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or (exporting is not None and bool(exporting()))
    )


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
