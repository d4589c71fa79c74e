"""Acceptance: in eval mode, PEDConv2d equals a per-sample nn.Conv2d loop with the weight of Eq. (2)."""

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pedconv
import pedconv.testing
from pedconv.execution import ConvGeometry, select_strategy
from pedconv.method import CPFactors
from pedconv.testing import randomize_generator, reference_forward

KERNELS = [1, 3, 5, (1, 3)]
MODES = ["zeros", "reflect", "replicate", "circular"]
SUBSETS = [c for n in (1, 2, 3) for c in itertools.combinations(pedconv.COMPONENTS, n)]


@st.composite
def layer_configs(draw):
    kernel = draw(st.sampled_from(KERNELS))
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2]))
    groups_kind = draw(st.sampled_from(["1", "2", "depthwise"]))
    cin = draw(st.sampled_from([2, 4, 6]))
    if groups_kind == "depthwise":
        groups, cout = cin, cin * draw(st.sampled_from([1, 2]))
    else:
        groups = int(groups_kind)
        cout = groups * draw(st.integers(1, 3))
    padding_choices = [0, 1, 2, (1, 0), "valid"] + (["same"] if stride == 1 else [])
    padding = draw(st.sampled_from(padding_choices))
    mode = draw(st.sampled_from(MODES))
    opts = dict(
        rank=draw(st.integers(1, 3)),
        components=draw(st.sampled_from(SUBSETS)),
        variational=draw(st.booleans()),
        infomax=draw(st.booleans()),
        activation=draw(st.sampled_from(sorted(pedconv.ACTIVATIONS))),
        strategy=draw(st.sampled_from(["auto"] + sorted(pedconv.STRATEGIES))),
        reduction=draw(st.sampled_from([1, 2, 16])),
    )
    if opts["variational"] and draw(st.booleans()):
        opts["sigma"] = "learned"
    args = dict(
        in_channels=cin,
        out_channels=cout,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        padding_mode=mode,
    )
    batch = draw(st.integers(1, 3))
    size = draw(st.integers(9, 12)), draw(st.integers(9, 12))
    return args, opts, batch, size


@pytest.mark.filterwarnings("ignore:PEDConv2d. rank > 1")
@given(layer_configs())
def test_eval_forward_matches_per_sample_reference(config):
    args, opts, batch, size = config
    layer = pedconv.PEDConv2d(**args, **opts).eval()
    randomize_generator(layer)
    x = torch.randn(batch, args["in_channels"], *size)
    y = layer(x)
    ref = reference_forward(layer, x)
    static = torch.nn.Conv2d(**args)(x)
    assert y.shape == ref.shape == static.shape
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:PEDConv2d. rank > 1")
@given(layer_configs())
def test_components_and_dynamic_weight_follow_eq2(config):
    """Recompute Eq. (7) -> activation -> Eq. (2) by hand, with explicit loops over rank."""
    args, opts, batch, size = config
    layer = pedconv.PEDConv2d(**args, **opts).eval()
    randomize_generator(layer)
    x = torch.randn(batch, args["in_channels"], *size)
    gamma, phi, psi = layer.cp_factors(x)
    R, cout, cin_g = layer.rank, layer.out_channels, layer.in_channels // layer.groups
    kh, kw = layer.kernel_size
    assert gamma.shape == (batch, R, cout)
    assert phi.shape == (batch, R, cin_g)
    assert psi.shape == (batch, R, kh * kw)

    gen = layer.generator
    hidden = torch.relu(x.mean((2, 3)) @ gen.fc_share.weight.T + gen.fc_share.bias)
    mu = (hidden @ gen.head.weight.T + gen.head.bias)[:, : gen.out_features]
    act = pedconv.ACTIVATIONS[layer.activation]
    sizes = {"gamma": cout, "phi": cin_g, "psi": kh * kw}
    offset, expect = 0, {}
    for c in layer.components:
        n = R * sizes[c]
        expect[c] = act(mu[:, offset : offset + n]).reshape(batch, R, sizes[c])
        offset += n
    for name, value in zip(pedconv.COMPONENTS, (gamma, phi, psi)):
        torch.testing.assert_close(value, expect.get(name, torch.ones_like(value)))

    w = layer.dynamic_weight(x)
    manual = torch.zeros(batch, cout, cin_g, kh * kw)
    for r in range(R):
        manual += gamma[:, r, :, None, None] * phi[:, r, None, :, None] * psi[:, r, None, None, :]
    manual = manual.reshape(batch, cout, cin_g, kh, kw) * layer.weight
    torch.testing.assert_close(w, manual)


@pytest.mark.parametrize("strategy", sorted(pedconv.STRATEGIES))
@pytest.mark.parametrize("kernel,groups", [(1, 1), (3, 1), (3, 2), (3, 4), ((1, 3), 1)])
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("stride", [(1, 1), (2, 1)])
def test_strategies_agree_in_float64_forward_and_backward(strategy, kernel, groups, rank, B, stride):
    torch.manual_seed(1)
    cin, cout = 4, 8
    x = torch.randn(B, cin, 7, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin // groups, *((kernel, kernel) if isinstance(kernel, int) else kernel), dtype=torch.float64, requires_grad=True)
    kk = w.shape[-1] * w.shape[-2]
    bias = torch.randn(cout, dtype=torch.float64, requires_grad=True)
    comps = [torch.rand(B, rank, n, dtype=torch.float64, requires_grad=True) for n in (cout, cin // groups, kk)]
    padding = (0, 0) if kernel == 1 else (1, 1)
    args = (stride, padding, (1, 2), groups)
    ref = pedconv.testing.conv2d_per_sample(x, w, bias, *comps, *args)
    out = pedconv.pedconv_conv2d(x, w, bias, *comps, *args, strategy=strategy)
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn_like(ref)
    inputs = [x, w, bias, *comps]
    g_ref = torch.autograd.grad(ref, inputs, grad_out)
    g_out = torch.autograd.grad(out, inputs, grad_out)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)


def test_materialize_chunks_large_batches_exactly(monkeypatch):
    import pedconv.execution.materialize as dc

    torch.manual_seed(3)
    x = torch.randn(5, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    comps = [torch.rand(5, 1, n, dtype=torch.float64, requires_grad=True) for n in (6, 4, 9)]
    args = ((1, 1), (1, 1), (1, 1), 1)
    ref = pedconv.testing.conv2d_per_sample(x, w, None, *comps, *args)
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
    ref = pedconv.testing.conv2d_per_sample(x, w, None, *comps, *args)
    out = pedconv.pedconv_conv2d(x, w, None, *comps, *args, strategy="materialize")
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, [x, w, *comps], g), torch.autograd.grad(ref, [x, w, *comps], g)):
        torch.testing.assert_close(a, b)
