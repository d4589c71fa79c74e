"""Baselines (CondConv, DY-Conv, ODConv): per-sample references, from_conv, and convert(layer=...)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import pedconv
from pedconv.baselines import CondConv2d, DyConv2d, ODConv2d, dyconv_temperature


def _per_sample(x, weights, bias, stride, padding, groups):
    outs = [F.conv2d(x[b : b + 1], weights[b], bias, stride, padding, 1, groups) for b in range(x.shape[0])]
    return torch.cat(outs)


@pytest.mark.parametrize("num_kernels", [1, 4])
@pytest.mark.parametrize(
    "cin,cout,k,groups,stride", [(8, 16, 3, 1, 1), (8, 8, 3, 8, 2), (8, 16, 1, 1, 1), (8, 12, 3, 2, 2)]
)
def test_odconv_matches_its_equation_per_sample(num_kernels, cin, cout, k, groups, stride):
    """W_b = alpha_f (x) alpha_c (x) alpha_s * sum_k alpha_w[k] W_k, written out for each sample."""
    layer = ODConv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, num_kernels=num_kernels).double()
    layer.train()  # batch statistics in the attention BN: exercise training mode too
    x = torch.randn(3, cin, 7, 7, dtype=torch.double)
    y = layer(x)
    h = F.relu(layer.bn(layer.fc(x.mean((2, 3), keepdim=True)))).flatten(1)
    lin = lambda m: F.linear(h, m.weight.flatten(1), m.bias)
    a_c = torch.sigmoid(lin(layer.channel_fc))
    a_f = torch.sigmoid(lin(layer.filter_fc)) if cin != groups else torch.ones(3, cout, dtype=x.dtype)
    a_s = torch.sigmoid(lin(layer.spatial_fc)) if k > 1 else torch.ones(3, 1, dtype=x.dtype)
    a_w = torch.softmax(lin(layer.kernel_fc), 1) if num_kernels > 1 else torch.ones(3, 1, dtype=x.dtype)
    weights = []
    for b in range(3):
        w = sum(a_w[b, i] * layer.kernels()[i] for i in range(num_kernels)) * a_s[b].view(1, 1, k, k)
        # alpha_c scales input channel c of the *full* input: filter o sees channels of its group
        cin_g = cin // groups
        in_scale = torch.stack(
            [a_c[b, (o // (cout // groups)) * cin_g : (o // (cout // groups) + 1) * cin_g] for o in range(cout)]
        )
        weights.append(w * a_f[b].view(-1, 1, 1, 1) * in_scale.view(cout, cin_g, 1, 1))
    torch.testing.assert_close(y, _per_sample(x, weights, layer.bias, stride, k // 2, groups))


def test_dyconv_and_condconv_match_their_equations():
    x = torch.randn(3, 8, 6, 6)
    dy = DyConv2d(8, 16, 3, padding=1, temperature=5.0)
    attn = torch.softmax(dy.attention(x.mean((2, 3))) / 5.0, 1)
    w = torch.einsum("bk,koihw->boihw", attn, dy.kernels())
    outs = [F.conv2d(x[b : b + 1], w[b], attn[b] @ dy.bias, 1, 1) for b in range(3)]
    torch.testing.assert_close(dy(x), torch.cat(outs), rtol=1e-4, atol=1e-5)
    cc = CondConv2d(8, 16, 3, padding=1, num_experts=3)
    r = torch.sigmoid(cc.routing(x.mean((2, 3))))
    experts = cc.conv.weight.view(3, 16, 8, 3, 3)
    w = torch.einsum("bk,koihw->boihw", r, experts)
    outs = [F.conv2d(x[b : b + 1], w[b], r[b] @ cc.conv.bias, 1, 1) for b in range(3)]
    torch.testing.assert_close(cc(x), torch.cat(outs), rtol=1e-4, atol=1e-5)


def test_dyconv_temperature_schedule():
    assert dyconv_temperature(0) == 30.0 and dyconv_temperature(10) == 1.0 and dyconv_temperature(50) == 1.0
    assert dyconv_temperature(5) == pytest.approx(15.5)
    assert dyconv_temperature(2, anneal_epochs=4, start=10, end=2) == pytest.approx(6.0)


@pytest.mark.parametrize("layer", [DyConv2d, ODConv2d])
def test_from_conv_preserves_function(layer):
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1).eval()
    new = layer.from_conv(conv, num_kernels=4).eval()
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(new(x), conv(x), rtol=1e-4, atol=1e-5)
    # the kernels are equal but their attention weights differ per input: they can diverge
    new.train()
    new(x).square().mean().backward()
    g = new.weight.grad.view(4, 16, 8, 3, 3)
    assert not torch.allclose(g[0], g[1])


def test_condconv_refuses_to_fake_function_preservation():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    with pytest.raises(ValueError, match="preserve_function=False"):
        CondConv2d.from_conv(conv, preserve_function=True)
    layer = CondConv2d.from_conv(conv, num_experts=5)
    assert layer.conv.weight.shape == (5, 16 * 8 * 9)


@pytest.mark.parametrize(
    "layer,opts",
    [
        (CondConv2d, {"num_experts": 2}),
        (DyConv2d, {"num_kernels": 2}),
        (ODConv2d, {"num_kernels": 2}),
        (pedconv.SpatialPEDConv2d, {"rank": 1}),
    ],
)
def test_convert_with_any_layer(layer, opts):
    model = torchvision.models.resnet18(num_classes=5)
    converted = pedconv.convert(
        model, layer=layer, keep_shortcut=True, include="layer*.conv*", preserve_function=False, **opts
    )
    n = sum(isinstance(m, layer) for m in converted.modules())
    assert n == 16 and isinstance(converted.conv1, nn.Conv2d)
    assert converted(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_convert_layer_errors():
    model = torchvision.models.resnet18()
    with pytest.raises(TypeError, match="num_experts"):
        pedconv.convert(model, layer=CondConv2d, rank=2)
    with pytest.raises(TypeError, match="from_conv"):
        pedconv.convert(model, layer=nn.Conv2d)
    with pytest.raises(ValueError, match="padding"):
        DyConv2d.from_conv(nn.Conv2d(4, 4, 3, padding="same"))
    with pytest.raises(TypeError, match="exact type"):
        ODConv2d.from_conv(nn.Linear(4, 4))
