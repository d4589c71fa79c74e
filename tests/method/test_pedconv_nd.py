"""PEDConv1d and PEDConv3d: the same method as PEDConv2d in one and three spatial dimensions,
checked against a per-sample nn.Conv1d/nn.Conv3d with the weight of Eq. (2)."""

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import pedconv
import pedconv.testing
from pedconv.execution import ConvGeometry
from pedconv.method import CPFactors
from pedconv.testing import randomize_generator, reference_forward

LAYERS = {1: pedconv.PEDConv1d, 3: pedconv.PEDConv3d}
CONVS = {1: nn.Conv1d, 3: nn.Conv3d}


def _size(ndim, small, big):
    return (small,) * (ndim - 1) + (big,) if ndim == 3 else (big,)


@pytest.mark.parametrize("strategy", sorted(pedconv.STRATEGIES))
@pytest.mark.parametrize("ndim", [1, 3])
@pytest.mark.parametrize("kernel,groups,stride", [(1, 1, 1), (3, 1, 1), (3, 2, 1), (3, 1, 2), (2, 4, 2)])
@pytest.mark.parametrize("rank,batch", [(1, 3), (2, 2), (1, 1)])
def test_every_strategy_matches_the_per_sample_reference_in_float64(
    strategy, ndim, kernel, groups, stride, rank, batch
):
    torch.manual_seed(1)
    cin, cout = 4, 8
    spatial = (9,) if ndim == 1 else (4, 5, 6)
    x = torch.randn(batch, cin, *spatial, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin // groups, *([kernel] * ndim), dtype=torch.float64, requires_grad=True)
    bias = torch.randn(cout, dtype=torch.float64, requires_grad=True)
    comps = [torch.rand(batch, rank, n, dtype=torch.float64, requires_grad=True)
             for n in (cout, cin // groups, kernel**ndim)]
    padding = kernel // 2
    dilation = 2 if kernel == 3 else 1
    geometry = ConvGeometry.make(stride, padding, dilation, groups, ndim=ndim)
    ref = pedconv.testing.conv_per_sample(x, w, bias, CPFactors(*comps), geometry)
    fn = pedconv.pedconv_conv1d if ndim == 1 else pedconv.pedconv_conv3d
    out = fn(x, w, bias, *comps, stride, padding, dilation, groups, strategy=strategy)
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn_like(ref)
    inputs = [x, w, bias, *comps]
    for a, b in zip(torch.autograd.grad(out, inputs, grad_out), torch.autograd.grad(ref, inputs, grad_out)):
        torch.testing.assert_close(a, b)


@settings(max_examples=60)
@given(
    ndim=st.sampled_from([1, 3]),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    padding=st.sampled_from([0, 1, "same", "valid"]),
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    groups=st.sampled_from([1, 2]),
    rank=st.integers(1, 2),
    components=st.sampled_from([("gamma", "phi", "psi"), ("psi",), ("gamma", "phi"), ("phi", "psi")]),
    bias=st.booleans(),
    batch=st.integers(1, 3),
    # "triton" runs in the interpreter here: too slow for hundreds of examples (its own
    # property and padding-mode tests are in tests/execution/test_fused.py)
    strategy=st.sampled_from(["auto", *sorted(set(pedconv.STRATEGIES) - {"triton"})]),
)
def test_eval_output_matches_a_per_sample_conv(
    ndim, kernel, stride, dilation, padding, padding_mode, groups, rank, components, bias, batch, strategy
):
    if padding == "same" and stride != 1:
        stride = 1
    layer = LAYERS[ndim](4, 6, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias,
                         padding_mode=padding_mode, rank=rank, components=components, sigma=0.1,
                         strategy=strategy, dtype=torch.float64).eval()
    randomize_generator(layer)
    x = torch.randn(batch, 4, *((11,) if ndim == 1 else (5, 6, 7)), dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_forward(layer, x))


@pytest.mark.parametrize("ndim", [1, 3])
def test_from_conv_preserves_the_static_convolution(ndim):
    conv = CONVS[ndim](6, 10, 3, stride=2, padding=1, groups=2).eval()
    layer = LAYERS[ndim].from_conv(conv).eval()
    x = torch.randn(2, 6, *_size(ndim, 5, 12))
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-5)
    assert layer(x[0]).shape == conv(x[0]).shape  # unbatched input, as nn.ConvNd


@pytest.mark.parametrize("ndim", [1, 3])
def test_training_records_infomax_and_backpropagates(ndim):
    layer = LAYERS[ndim](4, 8, 3, padding=1, rank=2).train()
    x = torch.randn(3, 4, *_size(ndim, 4, 10), requires_grad=True)
    y = layer(x)
    assert y.shape == (3, 8, *x.shape[2:])
    loss = y.square().mean() + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(layer)
    loss.backward()
    assert layer.last_infomax_loss is not None
    assert all(p.grad is not None for p in (x, layer.weight, layer.generator.fc_share.weight))
    assert layer.decoder is not None and layer.decoder[0].weight.grad is not None


@pytest.mark.parametrize("ndim", [1, 3])
def test_components_and_dynamic_weight_cover_the_kernel_taps(ndim):
    layer = LAYERS[ndim](4, 6, (3,) * (ndim - 1) + (5,), padding="same", components=("psi", "output"))
    x = torch.randn(2, 4, *_size(ndim, 4, 9))
    gamma, phi, psi = layer.cp_factors(x)
    assert gamma.shape == (2, 1, 6) and psi.shape == (2, 1, 3 ** (ndim - 1) * 5)
    assert torch.equal(phi, torch.ones_like(phi))  # disabled component
    assert layer.dynamic_weight(x).shape == (2, *layer.weight.shape)


@pytest.mark.parametrize("ndim", [1, 3])
def test_bad_inputs_raise_like_nn_convnd(ndim):
    layer = LAYERS[ndim](4, 6, 3)
    with pytest.raises(ValueError, match=r"expects input of shape \(B, C, "):
        layer(torch.randn(2, 4, 8, 8) if ndim == 1 else torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match="in_channels=4"):
        layer(torch.randn(2, 5, *_size(ndim, 5, 8)))
    with pytest.raises(TypeError, match="kernel_size must be an int or"):
        LAYERS[ndim](4, 6, (3, 3))
    with pytest.raises(TypeError, match=f"expects an nn.Conv{ndim}d"):
        LAYERS[ndim].from_conv(nn.Conv2d(4, 6, 3))


def test_functional_forms_check_their_dimensions():
    with pytest.raises(ValueError, match="pedconv_conv1d expects x and weight with 3 dimensions"):
        pedconv.pedconv_conv1d(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), None, None, None, torch.rand(2, 1, 9))


def test_convert_swaps_conv1d_conv2d_and_conv3d_for_their_pedconv_layers():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Conv1d(4, 4, 3, padding=1), nn.Flatten(0, 0))
    converted = pedconv.convert(model, skip_first=False)
    assert [type(m).__name__ for m in converted if not isinstance(m, nn.Flatten)] == ["PEDConv1d", "PEDConv1d"]
    mixed = nn.ModuleDict({"a": nn.Conv3d(2, 4, 3), "b": nn.Conv2d(2, 4, 3), "c": nn.Conv1d(2, 4, 3)})
    out = pedconv.convert(mixed, skip_first=False)
    assert {k: type(m).__name__ for k, m in out.items()} == {"a": "PEDConv3d", "b": "PEDConv2d", "c": "PEDConv1d"}
    only_2d = pedconv.convert(mixed, skip_first=False, dims=[2])
    assert {k: type(m).__name__ for k, m in only_2d.items()} == {"a": "Conv3d", "b": "PEDConv2d", "c": "Conv1d"}
    # Layers without 1-D/3-D versions replace nn.Conv2d only.
    cond = pedconv.convert(mixed, skip_first=False, layer=pedconv.baselines.CondConv2d)
    assert {k: type(m).__name__ for k, m in cond.items()} == {"a": "Conv3d", "b": "CondConv2d", "c": "Conv1d"}
    with pytest.raises(ValueError, match="replaces"):
        pedconv.convert(mixed, layer=pedconv.baselines.CondConv2d, dims=[1])


@pytest.mark.parametrize("ndim", [1, 3])
def test_a_converted_audio_or_video_model_keeps_its_function(ndim):
    conv, bn = CONVS[ndim], (nn.BatchNorm1d if ndim == 1 else nn.BatchNorm3d)
    model = nn.Sequential(conv(2, 8, 3, padding=1), bn(8), nn.ReLU(), conv(8, 8, 3, stride=2, padding=1),
                          conv(8, 16, 1)).eval()
    converted = pedconv.convert(model).eval()
    assert sum(isinstance(m, LAYERS[ndim]) for m in converted.modules()) == 2
    x = torch.randn(3, 2, *_size(ndim, 4, 16))
    torch.testing.assert_close(converted(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ndim", [1, 3])
def test_trace_and_onnx_export_with_a_dynamic_batch(tmp_path, ndim):
    ort = pytest.importorskip("onnxruntime")
    layer = LAYERS[ndim](4, 6, 3, stride=(1,) * (ndim - 1) + (2,), padding=1).eval()
    randomize_generator(layer)
    x = torch.randn(2, 4, *_size(ndim, 4, 10))
    traced = torch.jit.trace(layer, x)
    xb = torch.randn(5, *x.shape[1:])
    torch.testing.assert_close(traced(xb), layer(xb), atol=1e-5, rtol=1e-5)
    path = tmp_path / "layer.onnx"
    torch.onnx.export(layer, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(sess.run(None, {"x": xb.numpy()})[0])
    torch.testing.assert_close(out, layer(xb), atol=1e-4, rtol=1e-4)
