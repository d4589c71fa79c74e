"""DCD against its written-out equation, per sample, in float64 (forward and gradients)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import pedconv
from pedconv.baselines import DCDConv2d, DCDLinear, dcd_latent_dim


def _pooled(xb: torch.Tensor, pool: int) -> torch.Tensor:
    """Means over a pool x pool grid of equal cells (the inputs here divide evenly), channel-major."""
    c, h, w = xb.shape
    return xb.view(c, pool, h // pool, pool, w // pool).mean(dim=(2, 4)).flatten()


def _dcd_reference(layer: DCDConv2d, x: torch.Tensor) -> torch.Tensor:
    """W_b = Λ_b W0 + P (Φ_b + I) Q^T at the centre tap, one F.conv2d per sample."""
    outs = []
    kh, kw = layer.kernel_size
    for xb in x:
        pooled = _pooled(xb, layer.pool)
        h = layer.squeeze.weight @ pooled
        h = h * F.hardsigmoid(layer.gate.weight @ h)
        phi = (layer.fc_phi.weight @ h).view(layer.latent_dim, layer.latent_dim)
        scale = 2 * torch.sigmoid(layer.fc_scale.weight @ h + layer.fc_scale.bias)
        w = scale[:, None, None, None] * layer.weight
        centre = torch.zeros_like(layer.weight)
        centre[:, :, kh // 2, kw // 2] = layer.p @ (phi + torch.eye(layer.latent_dim, dtype=x.dtype)) @ layer.q.T
        outs.append(F.conv2d(xb[None], w + centre, layer.bias, layer.stride, layer.padding, layer.dilation))
    return torch.cat(outs)


@pytest.mark.parametrize(
    "cin,cout,k,stride,padding,bias,options",
    [(8, 16, 3, 1, 1, True, {}), (16, 8, 1, 1, 0, False, {}), (8, 12, 3, 2, 1, True, {}), (12, 12, 1, 2, 0, True, {}),
     (6, 4, 3, 1, 0, False, {}), (8, 16, 1, 1, 0, False, {"latent_dim": "pointwise", "pool": "expand"}),
     (8, 8, 3, 1, 1, True, {"latent_dim": "sqrt4", "pool": 2, "reduction": 2}),
     (12, 6, 3, 2, 1, False, {"latent_dim": 5, "hidden": 7}), (6, 8, 3, 1, 2, True, {"dilation": 2}),
     (8, 8, 3, 2, 0, False, {"dilation": 2})],
)
@pytest.mark.parametrize("execution", ["feature", "weight"])
def test_dcd_matches_its_equation_per_sample_forward_and_gradients(cin, cout, k, stride, padding, bias, options,
                                                                   execution):
    torch.manual_seed(0)
    layer = DCDConv2d(cin, cout, k, stride=stride, padding=padding, bias=bias, dtype=torch.float64,
                      execution=execution, **options)
    nn.init.normal_(layer.fc_phi.weight, std=0.5)  # Φ starts at 0; exercise it
    x = torch.randn(3, cin, 8, 8, dtype=torch.float64, requires_grad=True)
    params = [p for p in layer.parameters()]
    y, ref = layer(x), _dcd_reference(layer, x)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *params], g)
    want = torch.autograd.grad(ref, [x, *params], g, allow_unused=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b)


def test_dcd_latent_dim_is_the_papers_formula():
    assert [dcd_latent_dim(c) for c in (16, 64, 128, 256, 512)] == [4, 8, 16, 16, 32]
    assert DCDConv2d(64, 64, 3, padding=1).latent_dim == 8


def test_dcd_latent_rules_of_the_official_networks():
    assert [dcd_latent_dim(c, "sqrt") for c in (64, 256, 512)] == [8, 16, 22]
    assert [dcd_latent_dim(c, "sqrt4") for c in (64, 256, 512)] == [16, 32, 45]
    # MobileNetV2's pointwise convs: expanding 24 -> 144 pools 2x2 (96 inputs), r = 8 -> L = 12;
    # projecting 960 -> 160: r = 2 -> min(480, 80) = 80, 80^2 > 2 * 960 so r = 4 -> L = 40
    assert dcd_latent_dim(24, "pointwise", out_channels=144, pool=2) == 12
    assert dcd_latent_dim(960, "pointwise", out_channels=160) == 40
    layer = DCDConv2d(24, 144, 1, latent_dim="pointwise", pool="expand", reduction=16)
    assert (layer.latent_dim, layer.pool, layer.squeeze.in_features, layer.squeeze.out_features) == (12, 2, 96, 9)
    with pytest.raises(ValueError, match="rule"):
        dcd_latent_dim(8, "nope")
    with pytest.raises(ValueError, match="pool"):
        DCDConv2d(8, 8, 1, pool=0)
    with pytest.raises(ValueError, match="execution"):
        DCDConv2d(8, 8, 1, execution="fast")


def test_dcd_auto_execution_picks_the_cheaper_form():
    layer = DCDConv2d(64, 64, 3, padding=1)  # L = 8
    assert layer._feature_is_cheaper(torch.empty(1, 64, 7, 7))  # 49 px: the residual on features
    assert not layer._feature_is_cheaper(torch.empty(1, 64, 56, 56))  # 3136 px: in the weights


def test_dcd_refuses_grouped_and_even_kernels_and_bad_options():
    with pytest.raises(ValueError, match="groups"):
        DCDConv2d(8, 8, 3, groups=8)
    with pytest.raises(ValueError, match="kernel_size"):
        DCDConv2d(8, 8, 2)
    with pytest.raises(ValueError, match="latent_dim"):
        DCDConv2d(8, 8, 1, latent_dim=-1)
    with pytest.raises(ValueError, match="padding"):
        DCDConv2d(8, 8, 3, padding="same")


def test_dcd_from_conv_starts_as_the_conv_and_then_is_dynamic():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
    x = torch.randn(2, 8, 9, 9)
    layer = DCDConv2d.from_conv(conv)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-5)
    (layer(x) ** 2).sum().backward()
    assert layer.p.grad is not None and layer.p.grad.abs().sum() > 0
    assert layer.fc_scale.weight.grad is not None and layer.fc_scale.weight.grad.abs().sum() > 0
    fresh = DCDConv2d.from_conv(conv, preserve_function=False)
    assert not torch.allclose(fresh(x), conv(x), atol=1e-3)


def test_dcd_linear_matches_its_equation_per_sample_and_starts_as_the_linear():
    torch.manual_seed(0)
    fc = nn.Linear(12, 5).double()
    layer = DCDLinear.from_linear(fc, preserve_function=False, latent_dim=4, hidden=6)
    nn.init.normal_(layer.conv.fc_phi.weight, std=0.5)
    x = torch.randn(3, 12, dtype=torch.float64)
    conv = layer.conv
    ref = []
    for xb in x:  # y_b = Λ_b ⊙ (W0 x_b) + P (Φ_b + I) Q^T x_b + bias
        h = conv.squeeze.weight @ xb
        h = h * F.hardsigmoid(conv.gate.weight @ h)
        phi = (conv.fc_phi.weight @ h).view(4, 4)
        scale = 2 * torch.sigmoid(conv.fc_scale.weight @ h + conv.fc_scale.bias)
        w0 = conv.weight[:, :, 0, 0]
        ref.append(scale * (w0 @ xb) + conv.p @ (phi + torch.eye(4, dtype=x.dtype)) @ conv.q.T @ xb + conv.bias)
    torch.testing.assert_close(layer(x), torch.stack(ref))
    kept = DCDLinear.from_linear(fc)
    torch.testing.assert_close(kept(x), fc(x))
    with pytest.raises(ValueError, match="DCDLinear expects input"):
        kept(torch.randn(2, 3, 12, dtype=torch.float64))


def test_convert_resnet18_to_dcd_runs_forward_and_backward():
    model = pedconv.convert(torchvision.models.resnet18(num_classes=10), layer=DCDConv2d)
    assert sum(isinstance(m, DCDConv2d) for m in model.modules()) > 0
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def test_dcd_cifar_resnet20_is_registered_with_static_stem_and_shortcuts():
    model = pedconv.create_model("dcd_cifar_resnet20", num_classes=10, width=8)
    assert sum(isinstance(m, DCDConv2d) for m in model.modules()) == 18
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ----------------------------------------------------------------------------- WeightNet
from pedconv.baselines import WeightNetConv2d  # noqa: E402


def _weightnet_reference(layer: WeightNetConv2d, x: torch.Tensor) -> torch.Tensor:
    """Grouped FC written as a loop over its G*Cout groups, one F.conv2d per sample."""
    outs, per = [], layer.ratio_m // layer.groups_g
    for xb in x:
        s = torch.sigmoid(layer.fc1(layer.reduce(xb.mean(dim=(1, 2)))))
        w = torch.cat([layer.fc2[j] @ s[j * per:(j + 1) * per] for j in range(layer.fc2.shape[0])])
        w = w.view(layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size)
        outs.append(F.conv2d(xb[None], w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups))
    return torch.cat(outs)


@pytest.mark.parametrize(
    "cin,cout,k,stride,groups,m,g,r",
    [(8, 16, 3, 1, 1, 2, 2, 16), (16, 8, 1, 2, 1, 2, 1, 16), (8, 8, 3, 2, 8, 2, 1, 16), (8, 12, 3, 1, 2, 4, 2, 16),
     (512, 8, 1, 1, 1, 2, 2, 8)],
)
def test_weightnet_matches_its_equation_per_sample_forward_and_gradients(cin, cout, k, stride, groups, m, g, r):
    torch.manual_seed(0)
    layer = WeightNetConv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, ratio_m=m, groups_g=g,
                            reduction=r, dtype=torch.float64)
    assert layer.reduce.out_features == max(16, cin // r)
    x = torch.randn(3, cin, 7, 7, dtype=torch.float64, requires_grad=True)
    params = list(layer.parameters())
    y, ref = layer(x), _weightnet_reference(layer, x)
    torch.testing.assert_close(y, ref)
    gy = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [x, *params], gy), torch.autograd.grad(ref, [x, *params], gy)):
        torch.testing.assert_close(a, b)


def test_weightnet_from_conv_starts_as_the_conv_and_bad_options_are_refused():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    x = torch.randn(2, 8, 5, 5)
    layer = WeightNetConv2d.from_conv(conv, groups_g=1)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-5)
    (layer(x) ** 2).sum().backward()
    assert layer.fc1.weight.grad is not None and layer.fc1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ratio_m"):
        WeightNetConv2d(8, 8, 3, ratio_m=3, groups_g=2)
    with pytest.raises(ValueError, match="groups_g"):
        WeightNetConv2d(8, 8, 1, groups=8, ratio_m=2, groups_g=2)
    with pytest.raises(ValueError, match="reduction"):
        WeightNetConv2d(8, 8, 3, reduction=0)


def test_weightnet_models_run():
    model = pedconv.convert(torchvision.models.resnet18(num_classes=10), layer=WeightNetConv2d)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    cifar = pedconv.create_model("weightnet_cifar_resnet20", num_classes=10, width=8)
    assert sum(isinstance(m, WeightNetConv2d) for m in cifar.modules()) == 18


def test_dcd_resnet18_is_the_official_layout_and_keeps_a_static_networks_function():
    torch.manual_seed(0)
    static = torchvision.models.resnet18(num_classes=10).eval()
    model = pedconv.create_model("dcd_resnet18", num_classes=10, static_weights=static.state_dict()).eval()
    assert isinstance(model.fc, DCDLinear) and model.fc.conv.latent_dim == 32
    assert model.layer4[1].conv2.latent_dim == 45  # int(sqrt(4 * 512))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), static(x), atol=1e-4, rtol=1e-4)
