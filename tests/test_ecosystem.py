"""state_dict, deepcopy/pickle, autocast, channels_last, torch.compile and torch.jit.trace."""

import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn

import pedconv
from pedconv.testing import randomize_generator


def _small_net(**options):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 16, 1),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    net = pedconv.convert(net, **options)
    for m in net.modules():
        if isinstance(m, pedconv.PEDConv2d):
            randomize_generator(m)
    return net


@pytest.mark.parametrize("options", [dict(), dict(rank=2, sigma="learned")])
def test_state_dict_round_trip(options):
    net = _small_net(**options).eval()
    other = _small_net(**options)
    for p in other.parameters():
        p.data.normal_()
    other.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(other.eval()(x), net(x), rtol=0, atol=0)
    keys = set(net.state_dict())
    assert {
        "3.weight",
        "3.bias",
        "3.generator.fc_share.weight",
        "3.generator.head.weight",
        "3.decoder.0.weight",
    } <= keys


def test_deepcopy_and_pickle_after_a_training_step():
    net = _small_net().train()
    net(torch.randn(2, 3, 16, 16))
    assert pedconv.infomax_loss(net).requires_grad
    x = torch.randn(2, 3, 16, 16)
    copied = copy.deepcopy(net).eval()
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False).eval()
    pickled = pickle.loads(pickle.dumps(net)).eval()
    ref = net.eval()(x)
    for other in (copied, loaded, pickled):
        torch.testing.assert_close(other(x), ref, rtol=0, atol=0)


def test_autocast_bfloat16_on_cpu():
    net = _small_net().eval()
    x = torch.randn(2, 3, 16, 16)
    ref = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        loss = out.float().sum() + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(net)
    assert pedconv.infomax_loss(net).dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "decoder" in n)


def test_channels_last():
    net = _small_net().eval()
    x = torch.randn(2, 3, 16, 16)
    ref = net(x)
    net_cl = net.to(memory_format=torch.channels_last)
    out = net_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", ["auto", *sorted(pedconv.STRATEGIES), "spatial", "odconv4"])
def test_channels_last_training_gradients(layer):
    """Training on channels_last weights and inputs gives the same gradients (a reshape bug once broke it)."""
    torch.manual_seed(0)
    if layer == "spatial":
        conv = pedconv.SpatialPEDConv2d(8, 8, 3, padding=1, variational=False)
    elif layer == "odconv4":
        conv = pedconv.baselines.ODConv2d(8, 8, 3, padding=1, num_kernels=4)
    else:
        conv = pedconv.PEDConv2d(8, 8, 3, padding=1, strategy=layer, variational=False)
    if hasattr(conv, "generator"):
        randomize_generator(conv)
    x = torch.randn(3, 8, 7, 7)

    def grads(module, inp):
        module.zero_grad()
        module(inp).square().mean().backward()
        return [p.grad.clone() for p in module.parameters() if p.grad is not None]

    ref = grads(conv.train(), x)
    conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    got = grads(conv_cl, x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.contiguous(), b, atol=1e-5, rtol=1e-4)


def test_jit_trace_matches_eager_on_new_shapes_and_batch_sizes():
    net = _small_net().eval()
    traced = torch.jit.trace(net, torch.randn(2, 3, 16, 16))
    for shape in [(2, 3, 16, 16), (2, 3, 20, 12), (1, 3, 16, 16), (7, 3, 16, 16)]:
        x = torch.randn(shape)
        torch.testing.assert_close(traced(x), net(x), atol=1e-5, rtol=1e-5)


def test_torch_compile_fullgraph_matches_eager():
    layer = pedconv.PEDConv2d(8, 8, 3, padding=1).eval()
    randomize_generator(layer)
    x = torch.randn(2, 8, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)
    layer.train()
    y = compiled(x)
    assert y.shape == (2, 8, 8, 8) and layer.last_infomax_loss is not None


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript_exporter", "dynamo_exporter"])
def test_onnx_export_with_dynamic_batch_matches_eager(tmp_path, dynamo):
    ort = pytest.importorskip("onnxruntime")
    net = _small_net(rank=1).eval()
    path = tmp_path / "net.onnx"
    x = torch.randn(2, 3, 16, 16)
    if dynamo:
        kw = dict(dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        kw = dict(dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=dynamo, **kw)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        xb = torch.randn(batch, 3, 16, 16)
        out = torch.from_numpy(sess.run(None, {"x": xb.numpy()})[0])
        torch.testing.assert_close(out, net(xb), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy", ["factored", "hybrid", "materialize", "naive"])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (1, 1)])
def test_every_strategy_compiles_without_graph_breaks(strategy, kernel, stride):
    layer = pedconv.PEDConv2d(8, 8, kernel, stride=stride, padding=kernel // 2, strategy=strategy).eval()
    randomize_generator(layer)
    x = torch.randn(3, 8, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)
    layer.train()
    xg = x.clone().requires_grad_(True)
    compiled(xg).sum().backward()
    assert xg.grad is not None and layer.weight.grad is not None


@pytest.mark.parametrize("layer", [*sorted(pedconv.STRATEGIES), "spatial", "odconv1", "odconv4", "dyconv", "condconv"])
def test_autocast_output_dtype_is_the_autocast_dtype(layer):
    """Like nn.Conv2d, every dynamic layer returns the autocast dtype (no silent float32 promotion),
    and matches its float32 result to bf16 precision, forward and backward."""
    torch.manual_seed(0)
    L = pedconv.baselines
    conv = {
        "spatial": lambda: pedconv.SpatialPEDConv2d(8, 8, 3, padding=1),
        "odconv1": lambda: L.ODConv2d(8, 8, 3, padding=1),
        "odconv4": lambda: L.ODConv2d(8, 8, 3, padding=1, num_kernels=4),
        "dyconv": lambda: L.DyConv2d(8, 8, 3, padding=1),
        "condconv": lambda: L.CondConv2d(8, 8, 3, padding=1),
    }.get(layer, lambda: pedconv.PEDConv2d(8, 8, 3, padding=1, strategy=layer))().eval()
    if hasattr(conv, "generator"):
        randomize_generator(conv)
    x = torch.randn(3, 8, 7, 7, requires_grad=True)
    ref = conv(x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=6e-2, rtol=6e-2)
    (g,) = torch.autograd.grad(out.float().sum(), x)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, g_ref, atol=1e-1, rtol=6e-2)
