"""Every execution strategy against the per-sample reference, float64, forward and backward."""

import pytest
import torch

import pedconv
import pedconv.execution.materialize as dc
import pedconv.testing
from pedconv.execution import ConvGeometry, select_strategy
from pedconv.method import CPFactors


@pytest.mark.parametrize("strategy", sorted(pedconv.STRATEGIES))
@pytest.mark.parametrize("kernel,groups", [(1, 1), (3, 1), (3, 2), (3, 4), ((1, 3), 1)])
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("stride", [(1, 1), (2, 1)])
def test_strategies_agree_in_float64_forward_and_backward(strategy, kernel, groups, rank, B, stride):
    torch.manual_seed(1)
    cin, cout = 4, 8
    x = torch.randn(B, cin, 7, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(
        cout,
        cin // groups,
        *((kernel, kernel) if isinstance(kernel, int) else kernel),
        dtype=torch.float64,
        requires_grad=True,
    )
    kk = w.shape[-1] * w.shape[-2]
    bias = torch.randn(cout, dtype=torch.float64, requires_grad=True)
    comps = [torch.rand(B, rank, n, dtype=torch.float64, requires_grad=True) for n in (cout, cin // groups, kk)]
    padding = (0, 0) if kernel == 1 else (1, 1)
    args = (stride, padding, (1, 2), groups)
    ref = pedconv.testing.conv2d_per_sample(x, w, bias, CPFactors(*comps), ConvGeometry.make(*args))
    out = pedconv.pedconv_conv2d(x, w, bias, *comps, *args, strategy=strategy)
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn_like(ref)
    inputs = [x, w, bias, *comps]
    g_ref = torch.autograd.grad(ref, inputs, grad_out)
    g_out = torch.autograd.grad(out, inputs, grad_out)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)


def test_materialize_chunks_large_batches_exactly(monkeypatch):
    torch.manual_seed(3)
    x = torch.randn(5, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    comps = [torch.rand(5, 1, n, dtype=torch.float64, requires_grad=True) for n in (6, 4, 9)]
    args = ((1, 1), (1, 1), (1, 1), 1)
    ref = pedconv.testing.conv2d_per_sample(x, w, None, CPFactors(*comps), ConvGeometry.make(*args))
    monkeypatch.setattr(dc, "MAX_WEIGHT_ELEMENTS", 2 * w.numel())  # chunks of 2 samples
    out = pedconv.pedconv_conv2d(x, w, None, *comps, *args, strategy="materialize")
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, [x, w, *comps], g), torch.autograd.grad(ref, [x, w, *comps], g)):
        torch.testing.assert_close(a, b)


def test_auto_never_depends_on_batch_while_tracing():
    x, w = torch.randn(1, 8, 5, 5), torch.randn(8, 8, 3, 3)
    comps = [torch.rand(1, 1, n) for n in (8, 8, 9)]
    assert select_strategy(x, w, CPFactors(*comps), ConvGeometry()) == "materialize"  # B = 1 eager

    def f(x):
        assert select_strategy(x, w, CPFactors(*comps), ConvGeometry()) == "factored"
        return x

    torch.jit.trace(f, x, check_trace=False)


def test_batch_one_deep_layer_uses_scaled_columns_exactly():
    """B=1 with a kernel far larger than its im2col columns (the deep-layer path)."""
    torch.manual_seed(4)
    x = torch.randn(1, 64, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(64, 64, 3, 3, dtype=torch.float64, requires_grad=True)
    comps = [torch.rand(1, 1, n, dtype=torch.float64, requires_grad=True) for n in (64, 64, 9)]
    args = ((1, 1), (1, 1), (1, 1), 1)
    ref = pedconv.testing.conv2d_per_sample(x, w, None, CPFactors(*comps), ConvGeometry.make(*args))
    out = pedconv.pedconv_conv2d(x, w, None, *comps, *args, strategy="materialize")
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, [x, w, *comps], g), torch.autograd.grad(ref, [x, w, *comps], g)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("strategy", sorted(pedconv.STRATEGIES))
@pytest.mark.parametrize(
    "enabled", [("gamma",), ("phi",), ("psi",), ("gamma", "phi"), ("phi", "psi"), ("gamma", "psi")]
)
@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("rank", [1, 2])
def test_strategies_with_disabled_components_match_the_reference_in_float64(strategy, enabled, kernel, rank):
    """A disabled component (None, all ones) in every strategy: forward and every gradient."""
    torch.manual_seed(2)
    B, cin, cout = 3, 4, 6
    x = torch.randn(B, cin, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin, kernel, kernel, dtype=torch.float64, requires_grad=True)
    sizes = {"gamma": cout, "phi": cin, "psi": kernel * kernel}
    comps = {
        c: torch.rand(B, rank, n, dtype=torch.float64, requires_grad=True) for c, n in sizes.items() if c in enabled
    }
    factors = CPFactors(comps.get("gamma"), comps.get("phi"), comps.get("psi"))
    args = ((1, 1), (kernel // 2,) * 2, (1, 1), 1)
    ref = pedconv.testing.conv2d_per_sample(x, w, None, factors, ConvGeometry.make(*args))
    out = pedconv.pedconv_conv2d(x, w, None, *factors, *args, strategy=strategy)
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn_like(ref)
    inputs = [x, w, *comps.values()]
    for a, b in zip(torch.autograd.grad(out, inputs, grad_out), torch.autograd.grad(ref, inputs, grad_out)):
        torch.testing.assert_close(a, b)
