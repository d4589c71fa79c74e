"""Spatial-dynamic PEDConv (Sec. 4.6): the fast tap loop equals a per-pixel nn.Conv2d loop."""

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

import pedconv
from pedconv import SpatialPEDConv2d
from pedconv.method import CPFactors
from pedconv.testing import randomize_generator, reference_conv, spatial_conv2d_per_pixel

SUBSETS = [c for n in (1, 2, 3) for c in itertools.combinations(pedconv.COMPONENTS, n)]


def per_pixel_reference(layer: SpatialPEDConv2d, x: torch.Tensor) -> torch.Tensor:
    """For every output pixel, a depthwise nn.Conv2d with that pixel's weight (Eq. 2); keep that pixel."""
    weights = layer.dynamic_weight(x)  # (B, Ho, Wo, Cout, 1, kh, kw)
    conv = reference_conv(layer, x.dtype)
    batch, ho, wo = weights.shape[:3]
    out = x.new_zeros(batch, layer.out_channels, ho, wo)
    with torch.no_grad():
        for b in range(batch):
            for i in range(ho):
                for j in range(wo):
                    conv.weight.copy_(weights[b, i, j])
                    out[b, :, i, j] = conv(x[b : b + 1])[0, :, i, j]
    return out


@st.composite
def configs(draw):
    cin = draw(st.sampled_from([2, 3, 4]))
    kernel = draw(st.sampled_from([1, 3, (1, 3), 5]))
    stride = draw(st.sampled_from([1, 2]))
    padding = draw(st.sampled_from([0, 1, 2, "valid"] + (["same"] if stride == 1 else [])))
    args = dict(
        in_channels=cin,
        out_channels=cin * draw(st.sampled_from([1, 2])),
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=draw(st.sampled_from([1, 2])),
        bias=draw(st.booleans()),
        padding_mode=draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
    )
    opts = dict(
        rank=draw(st.integers(1, 3)),
        components=draw(st.sampled_from(SUBSETS)),
        activation=draw(st.sampled_from(sorted(pedconv.ACTIVATIONS))),
        reduction=draw(st.sampled_from([1, 16])),
        infomax=draw(st.booleans()),
    )
    return args, opts, draw(st.integers(1, 2)), (draw(st.integers(6, 8)), draw(st.integers(6, 8)))


@pytest.mark.filterwarnings("ignore:SpatialPEDConv2d. rank > 1")
@given(configs())
def test_spatial_matches_per_pixel_conv_loop(cfg):
    args, opts, batch, size = cfg
    layer = SpatialPEDConv2d(**args, **opts).double()
    x = torch.randn(batch, args["in_channels"], *size, dtype=torch.double)
    assume(min(layer.output_size(x)) >= 1)
    randomize_generator(layer)
    layer.eval()
    torch.testing.assert_close(layer(x), per_pixel_reference(layer, x), rtol=1e-10, atol=1e-10)


def test_components_are_the_generator_on_each_pixel_vector():
    """Eq. (7) without pooling: at stride 1 each pixel's components come from x[:, :, i, j]."""
    layer = SpatialPEDConv2d(8, 8, 3, padding=1, rank=2, sigma=0.1).double().eval()
    randomize_generator(layer)
    x = torch.randn(2, 8, 5, 4, dtype=torch.double)
    gamma, phi, psi = layer.cp_factors(x)
    gen = layer.generator
    for b, i, j in [(0, 0, 0), (1, 4, 3), (1, 2, 1)]:
        v = x[b, :, i, j]
        g = 2 * torch.sigmoid(gen.head(torch.relu(gen.fc_share(v))))
        want = g.split([2 * 8, 2 * 1, 2 * 9])
        for got, w in zip((gamma, phi, psi), want):
            torch.testing.assert_close(got[b, :, :, i, j], w.view(2, -1))
    # strided: the generator reads the input average-pooled to the output grid
    strided = SpatialPEDConv2d(8, 8, 3, stride=2, padding=1, rank=1).double().eval()
    randomize_generator(strided)
    g2, _, _ = strided.cp_factors(x)
    v = F.adaptive_avg_pool2d(x, (3, 2))[1, :, 2, 1]
    want = 2 * torch.sigmoid(strided.generator.head(torch.relu(strided.generator.fc_share(v))))[:8]
    torch.testing.assert_close(g2[1, 0, :, 2, 1], want)


def test_training_forward_and_infomax_follow_eq5_eq6_per_pixel():
    layer = SpatialPEDConv2d(4, 4, 3, padding=1, rank=2, sigma=0.3).double().train()
    randomize_generator(layer)
    x = torch.randn(2, 4, 5, 5, dtype=torch.double)
    torch.manual_seed(7)
    y = layer(x)
    loss = layer.last_infomax_loss
    torch.manual_seed(7)
    comps, g, feats = layer._generate(x, sample=True)  # same noise draw
    gamma, phi, psi = (comps[c] for c in pedconv.COMPONENTS)
    xp = layer.pad_input(x)
    want = spatial_conv2d_per_pixel(
        xp, layer.weight, layer.bias, CPFactors(gamma, phi, psi), layer.stride, layer.dilation
    )
    torch.testing.assert_close(y, want)
    mu = layer.generator(feats)[0]
    assert (g - mu).abs().max() > 0.05  # noise was applied, per pixel
    torch.testing.assert_close(loss, F.mse_loss(layer.decoder(g), x.permute(0, 2, 3, 1)))
    assert pedconv.infomax_loss(nn.Sequential(layer)) is loss


@pytest.mark.filterwarnings("ignore:SpatialPEDConv2d. rank > 1")  # rank 2 without noise, on purpose
@pytest.mark.parametrize("components", [("gamma", "phi", "psi"), ("psi",), ("gamma",), ("phi", "gamma")])
def test_gradients_match_autograd_through_the_reference(components):
    """The recomputing backward equals autograd through the per-pixel reference (float64)."""
    torch.manual_seed(1)
    layer = SpatialPEDConv2d(3, 6, 3, stride=2, padding=1, rank=2, components=components, sigma=0.0).double()
    randomize_generator(layer)
    layer.eval()
    x = torch.randn(2, 3, 6, 5, dtype=torch.double, requires_grad=True)
    target = torch.randn(2, 6, 3, 3, dtype=torch.double)
    params = [p for n, p in layer.named_parameters() if not n.startswith("decoder")]
    fast = torch.autograd.grad((layer(x) * target).sum(), [x, *params])
    comps, _, _ = layer._generate(x, sample=False)
    ref = spatial_conv2d_per_pixel(
        layer.pad_input(x),
        layer.weight,
        layer.bias,
        CPFactors(comps.get("gamma"), comps.get("phi"), comps.get("psi")),
        layer.stride,
        layer.dilation,
    )
    slow = torch.autograd.grad((ref * target).sum(), [x, *params])
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_gradcheck_training_mode():
    layer = SpatialPEDConv2d(2, 4, 3, padding=1, rank=2, sigma=0.1).double().train()
    randomize_generator(layer)
    x = torch.randn(1, 2, 4, 4, dtype=torch.double, requires_grad=True)

    def f(inp):
        torch.manual_seed(3)
        return layer(inp)

    assert torch.autograd.gradcheck(f, (x,))


def test_backward_keeps_no_per_tap_or_per_pixel_weight_tensors():
    """Between forward and backward the op keeps the input and the components, nothing k*k-sized."""
    layer = SpatialPEDConv2d(16, 16, 5, padding=2, components=("gamma", "psi"), infomax=False, variational=False)
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        layer(x)
    per_pixel_weight = 2 * 16 * 25 * 12 * 12  # what unfold-style execution would store
    # x, its padded copy, gamma/psi and the generator's activations: each well under the
    # per-pixel weights, and all together less than half of them
    assert max(saved) < per_pixel_weight / 4, saved
    assert sum(saved) < per_pixel_weight / 2, saved


def test_from_conv_and_errors():
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8).eval()
    layer = SpatialPEDConv2d.from_conv(dw).eval()
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(layer(x), dw(x), rtol=1e-5, atol=1e-6)  # starts as the depthwise conv
    dense = nn.Conv2d(8, 8, 3, padding=1)
    with pytest.raises(ValueError, match="preserve_function=False"):
        SpatialPEDConv2d.from_conv(dense, preserve_function=True)
    fresh = SpatialPEDConv2d.from_conv(dense)
    assert fresh.weight.shape == (8, 1, 3, 3) and fresh.groups == 8
    torch.testing.assert_close(fresh.bias, dense.bias)
    with pytest.raises(ValueError, match="groups must be in_channels=8"):
        SpatialPEDConv2d(8, 8, 3, groups=2)
    with pytest.raises(ValueError, match="in_channels=8"):
        layer(torch.randn(1, 4, 6, 6))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        SpatialPEDConv2d(8, 8, 5, dilation=2)(torch.randn(1, 8, 6, 6))
    with pytest.raises(TypeError, match="strategy"):
        SpatialPEDConv2d(8, 8, 3, strategy="factored")


def test_unbatched_input_and_state_dict():
    layer = SpatialPEDConv2d(4, 4, 3, padding=1).eval()
    randomize_generator(layer)
    x = torch.randn(4, 7, 7)
    torch.testing.assert_close(layer(x), layer(x[None])[0])
    other = SpatialPEDConv2d(4, 4, 3, padding=1).eval()
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), layer(x))
