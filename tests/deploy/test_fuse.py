"""fuse_bn: exact on converted torchvision models with non-trivial BN statistics, static and
dynamic convs of every kind, the cases it must leave alone, and the ONNX graph it gives."""

import warnings

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.nn.modules.batchnorm import _BatchNorm

import pedconv
from pedconv.baselines import CondConv2d, DyConv2d, ODConv2d
from pedconv.testing import randomize_generator


def _randomize(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, random generator heads; eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
            elif isinstance(m, (pedconv.PEDConv2d, pedconv.SpatialPEDConv2d)):
                randomize_generator(m, 0.3)
    return model.eval()


def _check_exact(model: nn.Module, x: torch.Tensor) -> nn.Module:
    with torch.no_grad():
        ref = model(x)
        fused = pedconv.fuse_bn(model)
        out = fused(x)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < 1e-5, rel
    return fused


def _bn_after_conv(model: nn.Module) -> list[str]:
    """BNs that directly follow a conv (fx graph of the fused model)."""
    from pedconv.deploy.fuse import _conv_like, _ConvLeafTracer

    graph = _ConvLeafTracer().trace(model)
    return [
        str(n.target) for n in graph.nodes
        if n.op == "call_module" and isinstance(model.get_submodule(str(n.target)), _BatchNorm)
        and n.args[0].op == "call_module" and _conv_like(model.get_submodule(str(n.args[0].target)))
    ]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_converted_torchvision_models_fuse_exactly(name):
    model = _randomize(pedconv.convert(getattr(torchvision.models, name)(num_classes=10)))
    n_bn = sum(isinstance(m, _BatchNorm) for m in model.modules())
    fused = _check_exact(model, torch.randn(2, 3, 64, 64))
    assert not _bn_after_conv(fused)
    assert sum(isinstance(m, _BatchNorm) for m in fused.modules()) == 0 < n_bn


def test_static_model_fuses_exactly():
    fused = _check_exact(_randomize(torchvision.models.resnet18(num_classes=10)), torch.randn(2, 3, 64, 64))
    assert isinstance(fused.bn1, nn.Identity) and fused.conv1.bias is not None


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_of_any_dimension(dims):
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    model = _randomize(nn.Sequential(conv(3, 6, 3, padding=1, groups=3), bn(6), nn.ReLU(), conv(6, 4, 1), bn(4)))
    fused = _check_exact(model, torch.randn(2, 3, *([6] * dims)))
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[4], nn.Identity)


@pytest.mark.parametrize("layer", ["pedconv_rank2", "pedconv_grouped", "spatial", "dyconv", "dyconv_nobias",
                                   "odconv1", "odconv4"])
def test_dynamic_layers_fuse_exactly(layer):
    make = {
        "pedconv_rank2": lambda: pedconv.PEDConv2d(4, 8, 3, padding=1, rank=2, bias=False),
        "pedconv_grouped": lambda: pedconv.PEDConv2d(4, 8, 3, stride=2, padding=1, groups=2),
        "spatial": lambda: pedconv.SpatialPEDConv2d(4, 8, 3, padding=1, rank=2),
        "dyconv": lambda: DyConv2d(4, 8, 3, padding=1),
        "dyconv_nobias": lambda: DyConv2d(4, 8, 3, padding=1, bias=False),
        "odconv1": lambda: ODConv2d(4, 8, 3, padding=1, bias=False),
        "odconv4": lambda: ODConv2d(4, 8, 3, padding=1, num_kernels=4),
    }[layer]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank > 1 symmetry warning
        model = nn.Sequential(make(), nn.BatchNorm2d(8), nn.ReLU())
    model = _randomize(model)
    if layer.startswith("odconv"):  # random attention heads, so the fold meets every attention
        with torch.no_grad():
            for m in model[0]._attention_modules():
                m.weight.normal_(0.0, 0.3)
    fused = _check_exact(model, torch.randn(3, 4, 7, 7))
    assert isinstance(fused[1], nn.Identity)


def test_condconv_is_left_with_a_warning():
    model = _randomize(nn.Sequential(CondConv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8)))
    with pytest.warns(UserWarning, match="CondConv2d's sigmoid routing"):
        pedconv.fuse_bn(model)
    assert isinstance(model[1], nn.BatchNorm2d)


class _TwoUsers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class _Untraceable(nn.Module):
    """Control flow on a value: fx cannot trace it, so the Sequential fallback applies."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.body(x)
        return self.bn(self.conv(y)) if y.sum() > 0 else y


def test_a_conv_output_with_two_users_is_not_folded():
    model = _randomize(_TwoUsers())
    fused = _check_exact(model, torch.randn(2, 3, 6, 6))
    assert isinstance(fused.bn, nn.BatchNorm2d)


def test_untraceable_models_fall_back_to_sequential_adjacency():
    model = _randomize(_Untraceable())
    fused = _check_exact(model, torch.randn(2, 3, 6, 6).abs())
    assert isinstance(fused.body[1], nn.Identity)
    assert isinstance(fused.bn, nn.BatchNorm2d)  # an attribute pair: not visible without a trace


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"fuse_bn needs a model in eval mode \(call model.eval\(\) first\)") as err:
        pedconv.fuse_bn(torchvision.models.resnet18())
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match=r"fuse_bn expects an nn\.Module, got dict"):
        pedconv.fuse_bn({})  # type: ignore[arg-type]


def test_fused_stripped_onnx_graph_has_constant_conv_weights_and_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from pedconv.deploy import data_dependent_conv_weights, op_counts

    model = _randomize(pedconv.convert(torchvision.models.resnet18(num_classes=10)))
    model = pedconv.fuse_bn(pedconv.strip_infomax(model))
    path = tmp_path / "r18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, 64, 64),), str(path), input_names=["x"], output_names=["y"],
                          dynamo=False, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    assert data_dependent_conv_weights(path) == []
    assert "BatchNormalization" not in op_counts(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            ref = model(x)
        out = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
