"""Operator counts per PEDConv layer call: the regression guard of the lean layer.

Every operator is a kernel launch on a GPU; a network of small layers is bound by them. The
counts below are those of one 16->16 3x3 layer at 14x14, batch 128 (``layer_op_counts``), and
were reached by fusing the sampling into one op, dropping a dispatcher call from the info-max
loss, composing the rank-1 CP tensor without einsum, and computing the three component
gradients of the materialized weight with four batched matrix products. Lower them freely;
raising them needs a reason in the README's speed section.
"""

from __future__ import annotations

import torch
import torch.nn as nn

import pedconv
from pedconv.baselines import CondConv2d
from pedconv.tools.opcount import OpCounter, count_ops, layer_op_counts

X = torch.randn(128, 16, 14, 14)

# Measured; the README's speed section lists where they go.
PEDCONV_EVAL_OPS = 11
PEDCONV_TRAIN_OPS = 58
PEDCONV_TRAIN_OPS_NO_INFOMAX = 45


def test_static_conv_counts_one_kernel_per_pass():
    # Forward; the harness's loss (sum, the zero info-max term, its scale and sum) and the
    # gradient seed; the convolution's backward.
    assert layer_op_counts(nn.Conv2d(16, 16, 3, padding=1), X) == {"eval": 1, "train": 7}


def test_pedconv_layer_stays_within_its_operator_budget():
    counts = layer_op_counts(pedconv.PEDConv2d(16, 16, 3, padding=1), X)
    assert counts["eval"] <= PEDCONV_EVAL_OPS, counts
    assert counts["train"] <= PEDCONV_TRAIN_OPS, counts
    lean = layer_op_counts(pedconv.PEDConv2d(16, 16, 3, padding=1, infomax=False), X)
    assert lean["train"] <= PEDCONV_TRAIN_OPS_NO_INFOMAX, lean


def test_condconv_reference_count():
    """CondConv's count, measured the same way (the issue's yardstick): one routing GEMM
    builds every sample's kernel, so it stays below PEDConv's generator and decoder."""
    assert layer_op_counts(CondConv2d(16, 16, 3, padding=1), X) == {"eval": 6, "train": 23}


def test_counter_ignores_views_and_allocations():
    def fn() -> None:
        t = torch.empty(4, 4)  # an allocation: no kernel
        t.view(2, 8).transpose(0, 1).fill_(1.0)  # two views and one kernel

    ops = count_ops(fn)
    assert ops.total == 1 and list(ops.counts) == ["fill_"]
    with OpCounter() as again:
        fn()
    assert again.calls == ["aten.fill_.Scalar"]
