"""DCD against its written-out equation, per sample, in float64 (forward and gradients)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import pedconv
from pedconv.baselines import DCDConv2d, dcd_latent_dim


def _dcd_reference(layer: DCDConv2d, x: torch.Tensor) -> torch.Tensor:
    """W_b = Λ_b W0 + P (Φ_b + I) Q^T at the centre tap, one F.conv2d per sample."""
    outs = []
    kh, kw = layer.kernel_size
    for xb in x:
        pooled = xb.mean(dim=(1, 2))
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
    "cin,cout,k,stride,padding,bias",
    [(8, 16, 3, 1, 1, True), (16, 8, 1, 1, 0, False), (8, 12, 3, 2, 1, True), (12, 12, 1, 2, 0, True),
     (6, 4, 3, 1, 0, False)],
)
def test_dcd_matches_its_equation_per_sample_forward_and_gradients(cin, cout, k, stride, padding, bias):
    torch.manual_seed(0)
    layer = DCDConv2d(cin, cout, k, stride=stride, padding=padding, bias=bias, dtype=torch.float64)
    x = torch.randn(3, cin, 7, 7, dtype=torch.float64, requires_grad=True)
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
    "cin,cout,k,stride,groups,m,g",
    [(8, 16, 3, 1, 1, 2, 2), (16, 8, 1, 2, 1, 2, 1), (8, 8, 3, 2, 8, 2, 1), (8, 12, 3, 1, 2, 4, 2)],
)
def test_weightnet_matches_its_equation_per_sample_forward_and_gradients(cin, cout, k, stride, groups, m, g):
    torch.manual_seed(0)
    layer = WeightNetConv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, ratio_m=m, groups_g=g,
                            dtype=torch.float64)
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


def test_weightnet_models_run():
    model = pedconv.convert(torchvision.models.resnet18(num_classes=10), layer=WeightNetConv2d)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    cifar = pedconv.create_model("weightnet_cifar_resnet20", num_classes=10, width=8)
    assert sum(isinstance(m, WeightNetConv2d) for m in cifar.modules()) == 18
