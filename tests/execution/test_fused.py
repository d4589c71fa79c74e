"""The fused Triton kernels (strategy ``"triton"``) in Triton's interpreter, against the
per-sample reference: float64 forward and every gradient, both kernel families (implicit GEMM
and direct), every geometry, ranks, disabled components; float32 at 1e-4 relative; bf16/fp16;
1-D and 3-D; layers, ``torch.compile`` and export; the errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("triton", reason="strategy 'triton' needs the triton package, which is not installed here")

import pedconv
import pedconv.testing
from pedconv.execution import ConvGeometry, compiled
from pedconv.execution import dispatch as dispatch_module
from pedconv.execution.dispatch import AUTO_THRESHOLDS, AutoThresholds, layer_kind, select_strategy
from pedconv.execution.fused import fused, launch
from pedconv.method import CPFactors

FAMILIES = {"gemm": 0, "direct": 10**6}  # DIRECT_MAX_CIN_G forcing each kernel family


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(params=sorted(FAMILIES))
def family(request, monkeypatch):
    monkeypatch.setattr(launch, "DIRECT_MAX_CIN_G", FAMILIES[request.param])
    return request.param


def _case(B, cin, cout, kernel, groups, rank, enabled=(True, True, True), bias=True, size=(7, 6),
          dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    dd = dict(dtype=dtype, requires_grad=True)
    x = torch.randn(B, cin, *size, **dd)
    w = torch.randn(cout, cin // groups, *kernel, **dd)
    b = torch.randn(cout, **dd) if bias else None
    taps = 1
    for k in kernel:
        taps *= k
    comps = [torch.rand(B, rank, n, **dd) if on else None
             for n, on in zip((cout, cin // groups, taps), enabled)]
    return x, w, b, comps


def _check(x, w, b, comps, geometry, run=None, atol=None, rtol=None):
    """Values and every gradient against the per-sample reference."""
    factors = CPFactors(*comps)
    ref = pedconv.testing.conv_per_sample(x, w, b, factors, geometry)
    out = fused(x, w, b, factors, geometry) if run is None else run()
    assert out.dtype == x.dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    inputs = [t for t in (x, w, b, *comps) if t is not None]
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


# (B, cin, cout, kernel, stride, padding, dilation, groups, rank, enabled components, bias)
GEOMETRIES = [
    (3, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, (True, True, True), True),
    (2, 8, 12, (3, 3), (2, 1), (1, 0), (1, 2), 2, 2, (True, True, True), False),
    (2, 8, 8, (3, 3), (1, 2), (2, 1), (2, 1), 8, 1, (True, True, True), True),  # depthwise
    (2, 4, 8, (3, 3), (1, 1), (1, 1), (1, 1), 4, 2, (True, True, True), False),  # depthwise x2
    (3, 8, 6, (1, 1), (2, 2), (0, 0), (1, 1), 1, 1, (True, True, True), True),  # strided 1x1
    (2, 8, 8, (3, 1), (1, 1), (1, 0), (1, 1), 1, 3, (True, False, True), True),
    (2, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, (False, True, False), False),
    (2, 8, 8, (3, 3), (2, 2), (0, 0), (1, 1), 1, 2, (True, True, False), True),
    (1, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, (True, True, True), True),  # batch of one
]


@pytest.mark.parametrize("case", GEOMETRIES, ids=lambda c: "-".join(map(str, c[3:9])))
def test_kernels_match_the_per_sample_reference_in_float64(family, case):
    B, cin, cout, kernel, stride, padding, dilation, groups, rank, enabled, bias = case
    x, w, b, comps = _case(B, cin, cout, kernel, groups, rank, enabled, bias)
    _check(x, w, b, comps, ConvGeometry.make(stride, padding, dilation, groups))


def test_tiles_that_straddle_every_edge(family, monkeypatch):
    """Small tiles: several tiles along positions, channels and K, each with a ragged edge."""
    monkeypatch.setattr(launch, "INTERPRETER_BLOCKS", dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16))
    groups = 1 if family == "gemm" else 5  # the direct kernels loop over a group's input channels
    x, w, b, comps = _case(2, 20, 35 if family == "gemm" else 20, (3, 3), groups, 2, size=(5, 7))
    _check(x, w, b, comps, ConvGeometry.make(1, 1, 1, groups))


@pytest.mark.parametrize("layout", ["natural", "transposed"])
def test_the_weight_layout_is_read_through_its_strides(family, monkeypatch, layout):
    """On a GPU the base weight is passed output channel fastest (coalesced tiles); here too."""
    if layout == "transposed":
        real = launch._weight

        def transposed(weight, problem):
            return real(weight, problem).permute(2, 1, 0).contiguous().permute(2, 1, 0)

        monkeypatch.setattr(launch, "_weight", transposed)
    x, w, b, comps = _case(2, 8, 12, (3, 3), 2, 2)
    _check(x, w, b, comps, ConvGeometry.make(2, 1, 1, 2))


def test_channels_last_input_gives_channels_last_output():
    x, w, b, comps = _case(2, 8, 8, (3, 3), 1, 1)
    xc = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    geometry = ConvGeometry.make(1, 1, 1, 1)
    out = fused(xc, w, b, CPFactors(*comps), geometry)
    assert out.is_contiguous(memory_format=torch.channels_last)
    _check(xc, w, b, comps, geometry, run=lambda: fused(xc, w, b, CPFactors(*comps), geometry))


# the layers each kernel family is chosen for: dense (implicit GEMM) and depthwise (direct)
NATURAL = [("gemm", 1), ("direct", 8)]


@pytest.mark.parametrize("kind,groups", NATURAL)
def test_float32_is_within_1e4_relative(kind, groups):
    x, w, b, comps = _case(3, 8, 16, (3, 3), groups, 2, dtype=torch.float32)
    _check(x, w, b, comps, ConvGeometry.make(1, 1, 1, groups), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind,groups", NATURAL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_accumulate_in_float32(kind, groups, dtype):
    """Low-precision operands, float32 accumulation: as close to the float32 result as the
    operands' rounding allows (the reference composes and convolves in float32)."""
    x, w, b, comps = _case(2, 8, 8, (3, 3), groups, 1, dtype=torch.float32)
    geometry = ConvGeometry.make(1, 1, 1, groups)
    low = [t.detach().to(dtype).requires_grad_() for t in (x, w, b, *comps)]
    exact = [t.detach().to(dtype).float().requires_grad_() for t in (x, w, b, *comps)]
    out = fused(low[0], low[1], low[2], CPFactors(*low[3:]), geometry)
    ref = pedconv.testing.conv_per_sample(exact[0], exact[1], exact[2], CPFactors(*exact[3:]), geometry)
    assert out.dtype == dtype
    tol = dict(atol=5e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-2, rtol=5e-3)
    torch.testing.assert_close(out.float(), ref, **tol)
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, low, g.to(dtype)), torch.autograd.grad(ref, exact, g)):
        assert got.dtype == dtype
        scale = want.abs().max().clamp_min(1.0)
        torch.testing.assert_close(got.float() / scale, want / scale, **tol)


@pytest.mark.parametrize("ndim", [1, 3])
def test_one_and_three_dimensional_convolutions(ndim):
    kernel, size = ((3,), (9,)) if ndim == 1 else ((3, 3, 3), (3, 4, 3))
    x, w, b, comps = _case(2, 8, 8, kernel, 2, 2, size=size)
    conv = {1: pedconv.pedconv_conv1d, 3: pedconv.pedconv_conv3d}[ndim]
    geometry = ConvGeometry.make(1, 1, 1, 2, ndim=ndim)
    _check(x, w, b, comps, geometry, run=lambda: conv(x, w, b, *comps, 1, 1, 1, 2, strategy="triton"))


@settings(max_examples=6, deadline=None)
@given(
    data=st.data(),
    kernel=st.sampled_from([(1, 1), (3, 3), (2, 3), (5, 1)]),
    groups=st.sampled_from([1, 2, 8]),
    rank=st.integers(1, 3),
    direct=st.booleans(),
)
def test_random_geometries_match_the_reference(data, kernel, groups, rank, direct):
    stride = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    dilation = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    padding = data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)))
    enabled = data.draw(st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any))
    previous = launch.DIRECT_MAX_CIN_G
    launch.DIRECT_MAX_CIN_G = FAMILIES["direct" if direct else "gemm"]
    try:
        x, w, b, comps = _case(2, 8, 8, kernel, groups, rank, enabled, data.draw(st.booleans()), size=(7, 6),
                               seed=data.draw(st.integers(0, 100)))
        _check(x, w, b, comps, ConvGeometry.make(stride, padding, dilation, groups))
    finally:
        launch.DIRECT_MAX_CIN_G = previous


@pytest.mark.parametrize("padding_mode,padding", [("reflect", 1), ("replicate", (2, 1)), ("circular", 1),
                                                  ("zeros", "same")])
def test_layers_with_every_padding_mode_match_the_reference(padding_mode, padding):
    """Non-zero padding is the layer's pre-padding; the kernels see zero padding only."""
    layer = pedconv.PEDConv2d(8, 8, 3, padding=padding, padding_mode=padding_mode, rank=2, strategy="triton",
                              dtype=torch.float64).eval()
    pedconv.testing.randomize_generator(layer)
    x = torch.randn(2, 8, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), pedconv.testing.reference_forward(layer, x))


def test_a_layer_with_the_triton_strategy_trains_like_materialize():
    """The whole layer (generator, sampling, info-max) with strategy "triton": the same output
    and the same gradient for every parameter as with "materialize"."""
    torch.manual_seed(0)
    a = pedconv.PEDConv2d(8, 8, 3, padding=1, rank=2, strategy="triton").double()
    b = pedconv.PEDConv2d(8, 8, 3, padding=1, rank=2, strategy="materialize").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 8, 6, 6, dtype=torch.float64)
    outs = []
    for layer in (a, b):
        torch.manual_seed(1)  # the same noise samples
        y = layer(x)
        (y.square().mean() + pedconv.infomax_loss(layer)).backward()
        outs.append(y)
    torch.testing.assert_close(outs[0], outs[1])
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


@pytest.mark.skipif(not compiled.AVAILABLE, reason="custom operators need torch >= 2.4")
def test_the_custom_operator_passes_opcheck_and_matches_in_float64():
    x, w, b, comps = _case(2, 16, 8, (3, 3), 1, 2, size=(4, 3))
    geometry = ConvGeometry.make(2, 1, 1, 1)
    args = (x, w, b, *comps, list(geometry.stride), list(geometry.padding), list(geometry.dilation), 1)
    torch.library.opcheck(torch.ops.pedconv.fused_conv.default, args)
    plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    grad = torch.randn(2, 8, *geometry.output_size((4, 3), (3, 3)), dtype=torch.float64)
    torch.library.opcheck(torch.ops.pedconv.fused_conv_backward.default, (grad, *plain, [True] * 6))
    _check(x, w, b, comps, geometry, run=lambda: compiled.fused_conv(x, w, b, CPFactors(*comps), geometry))


@pytest.mark.skipif(not compiled.AVAILABLE, reason="custom operators need torch >= 2.4")
def test_torch_compile_calls_the_operator_without_a_graph_break():
    """fullgraph capture (dense and depthwise layers): the same values and parameter gradients as
    eager (eval mode: no noise samples to align)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = nn.Sequential(pedconv.PEDConv2d(4, 8, 3, padding=1, strategy="triton"), nn.ReLU(),
                          pedconv.PEDConv2d(8, 8, 3, padding=1, groups=8, strategy="triton")).eval()
    torch._dynamo.reset()
    counters.clear()
    compiled_model = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 4, 6, 6)
    grads = []
    for run in (compiled_model, model):
        model.zero_grad()
        y = run(x)
        y.square().sum().backward()
        grads.append((y.detach(), [p.grad for p in model.parameters()]))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    assert sum(g is not None for g in grads[1][1]) >= 6  # base weights, biases, generators
    for got, want in zip(grads[0][1], grads[1][1]):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_export_takes_the_export_form():
    layer = pedconv.PEDConv2d(8, 8, 3, padding=1, strategy="triton").eval()
    x = torch.randn(2, 8, 6, 6)
    traced = torch.jit.trace(layer, x, check_trace=False)
    ops = {n.kind() for n in traced.graph.nodes()}
    assert not any("pedconv" in op for op in ops)
    torch.testing.assert_close(traced(x), layer(x), atol=1e-5, rtol=1e-5)
    exported = torch.export.export(layer, (x,))
    assert "fused_conv" not in str(exported.graph)
    torch.testing.assert_close(exported.module()(x), layer(x), atol=1e-5, rtol=1e-5)


def test_auto_picks_triton_for_the_kinds_measured_faster(monkeypatch):
    x = torch.randn(4, 8, 6, 6)
    dense, depthwise = torch.randn(8, 8, 3, 3), torch.randn(8, 1, 3, 3)
    f = CPFactors(torch.rand(4, 1, 8), torch.rand(4, 1, 8), torch.rand(4, 1, 9))
    fd = CPFactors(torch.rand(4, 1, 8), torch.rand(4, 1, 1), torch.rand(4, 1, 9))
    assert select_strategy(x, dense, f, ConvGeometry()) != "triton"  # nothing measured for the CPU
    monkeypatch.setitem(AUTO_THRESHOLDS, "cpu", AutoThresholds(fused_kinds=frozenset({"dense"})))
    assert select_strategy(x, dense, f, ConvGeometry()) == "triton"
    assert select_strategy(x, depthwise, fd, ConvGeometry(groups=8)) != "triton"
    torch.use_deterministic_algorithms(True)
    try:
        assert select_strategy(x, dense, f, ConvGeometry()) != "triton"  # atomics: not deterministic
    finally:
        torch.use_deterministic_algorithms(False)
    monkeypatch.setattr(dispatch_module, "TRITON_AVAILABLE", False)
    assert select_strategy(x, dense, f, ConvGeometry()) != "triton"


def test_layer_kinds_and_their_validation():
    assert layer_kind(torch.empty(8, 1, 3, 3), 8) == "depthwise"
    assert layer_kind(torch.empty(8, 8, 1, 1), 1) == "pointwise"
    assert layer_kind(torch.empty(8, 4, 3, 3), 2) == "grouped"
    assert layer_kind(torch.empty(8, 8, 3, 3), 1) == "dense"
    with pytest.raises(ValueError, match="fused_kinds"):
        AutoThresholds(fused_kinds=frozenset({"dense", "huge"}))


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    x, w, b, comps = _case(2, 8, 8, (3, 3), 1, 1)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        pedconv.pedconv_conv2d(x, w, b, *comps, padding=1, strategy="triton")


def test_deterministic_mode_refuses_the_atomic_weight_gradients():
    x, w, b, comps = _case(2, 8, 8, (3, 3), 1, 1)
    torch.use_deterministic_algorithms(True)
    try:
        y = fused(x.detach(), w.detach(), None, CPFactors(*(c.detach() for c in comps)), ConvGeometry.make(1, 1))
        assert y.shape == (2, 8, 7, 6)  # forward and input gradients are deterministic
        out = fused(x, w, b, CPFactors(*comps), ConvGeometry.make(1, 1))
        with pytest.raises(RuntimeError, match="use_deterministic_algorithms"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64])
def test_unsupported_dtypes_are_refused(dtype):
    x = torch.zeros(2, 8, 5, 5, dtype=dtype)
    w = torch.zeros(8, 8, 3, 3, dtype=dtype)
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        fused(x, w, None, CPFactors(torch.ones(2, 1, 8, dtype=dtype), None, None), ConvGeometry.make(1, 1))
