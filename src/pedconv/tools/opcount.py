"""How many operators (on a GPU: kernel launches) a layer or model runs per call.

A dynamic convolution is cheap in FLOPs but can be slow where every small operator is a kernel
launch: a network of small layers on a GPU spends its time launching, not computing. This module
counts the operators that reach the kernels: the ATen calls seen below autograd (by a
``TorchDispatchMode``), so composite operators count as the kernels they become and the
backward pass is counted as well. Views (no data moved) and bare allocations (no kernel) are
left out. The counts are the same on every device: they are what a CUDA run launches, less
the work that a library call may split into several kernels internally.

The op-count test (``tests/tools/test_opcount.py``) holds PEDConv's layer to the counts
below so that nobody regresses them; ``pedconv bench`` prints them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "count_ops", "layer_op_counts"]

# Calls that move no data and launch no kernel (besides views, which the schema marks).
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "detach", "alias", "lift_fresh", "_to_copy_noop"}


class OpCounter(TorchDispatchMode):
    """Records every ATen operator that runs a kernel while active (views and allocations excluded).

    Example:
        >>> with OpCounter() as ops:
        ...     _ = torch.ones(3).exp().sum()
        >>> ops.total, sorted(ops.counts)
        (3, ['exp', 'ones', 'sum'])
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if not func.is_view and name not in _NO_KERNEL:
            self.counts[name] += 1
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_ops(fn: Callable[[], object]) -> OpCounter:
    """Run ``fn`` once (after a warm-up call) and return the counter of the measured call."""
    fn()
    with OpCounter() as ops:
        fn()
    return ops


def layer_op_counts(layer: nn.Module, x: Tensor) -> dict[str, int]:
    """Operators of one ``layer`` call: ``"eval"`` (forward under ``no_grad``, eval mode) and
    ``"train"`` (training-mode forward, ``loss = y.sum() + 1e-3 * infomax_loss``, backward into
    fresh gradients: ``set_to_none``, so that gradient accumulation is not counted).

    Example:
        >>> layer_op_counts(nn.Conv2d(4, 4, 3, padding=1), torch.randn(2, 4, 8, 8))
        {'eval': 1, 'train': 7}
    """
    from ..method.infomax import infomax_loss

    def evaluate() -> None:
        layer.eval()
        with torch.no_grad():
            layer(x)

    def train() -> None:
        layer.train()
        layer.zero_grad(set_to_none=True)
        xg = x.detach().requires_grad_(True)
        loss = layer(xg).sum() + 1e-3 * infomax_loss(layer)
        loss.backward()

    was_training = layer.training
    try:
        return {"eval": count_ops(evaluate).total, "train": count_ops(train).total}
    finally:
        layer.train(was_training)
