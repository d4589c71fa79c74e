"""PEDConv2d: the training-time method (Eq. 5-6), gradients, introspection and bad input."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import pedconv
import pedconv.testing
from pedconv.execution import ConvGeometry
from pedconv.method import CPFactors
from pedconv.testing import randomize_generator, reference_forward


def _manual_train_forward(layer, x, seed):
    """Re-derive the training forward from the equations with the same noise draw."""
    gen = layer.generator
    pooled = x.mean((2, 3))
    out = gen.head(torch.relu(gen.fc_share(pooled)))
    mu = out[:, : gen.out_features]
    sigma = F.softplus(out[:, gen.out_features :]) if layer.sigma == "learned" else layer.sigma
    torch.manual_seed(seed)
    g = mu + sigma * torch.randn_like(mu)  # Eq. (5)
    act = pedconv.ACTIVATIONS[layer.activation]
    sizes = {"gamma": layer.out_channels, "phi": layer.in_channels // layer.groups, "psi": math.prod(layer.kernel_size)}
    comps, offset = {}, 0
    for c in layer.components:
        n = layer.rank * sizes[c]
        comps[c] = act(g[:, offset : offset + n]).reshape(x.shape[0], layer.rank, sizes[c])
        offset += n
    factors = CPFactors(comps.get("gamma"), comps.get("phi"), comps.get("psi"))
    geometry = ConvGeometry.make(layer.stride, layer.padding, layer.dilation, layer.groups)
    y = pedconv.testing.conv2d_per_sample(x, layer.weight, layer.bias, factors, geometry)
    loss = F.mse_loss(layer.decoder(g), pooled.detach()) if layer.decoder is not None else None
    return y, loss


@pytest.mark.parametrize("sigma", [0.1, 0.7, "learned"])
@pytest.mark.parametrize("rank", [1, 2])
def test_training_forward_samples_eq5_and_records_eq6(sigma, rank):
    layer = pedconv.PEDConv2d(6, 8, 3, padding=1, rank=rank, sigma=sigma).train()
    randomize_generator(layer)
    x = torch.randn(3, 6, 7, 7, requires_grad=True)
    torch.manual_seed(123)
    y = layer(x)
    loss = layer.last_infomax_loss
    y_ref, loss_ref = _manual_train_forward(layer, x, 123)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss, loss_ref)
    # The reconstruction target is detached: gradients w.r.t. x agree with the manual form.
    gx = torch.autograd.grad(loss, x, retain_graph=True)[0]
    gx_ref = torch.autograd.grad(loss_ref, x)[0]
    torch.testing.assert_close(gx, gx_ref)


def test_training_is_stochastic_and_eval_is_deterministic():
    layer = pedconv.PEDConv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 6, 6)
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x), rtol=0, atol=0)
    det = pedconv.PEDConv2d(8, 8, 3, padding=1, variational=False).train()
    randomize_generator(det)
    torch.testing.assert_close(det(x), det(x), rtol=0, atol=0)
    torch.testing.assert_close(det(x), reference_forward(det, x), atol=1e-5, rtol=1e-4)


def test_learned_sigma_starts_at_init_value_and_depends_on_input():
    layer = pedconv.PEDConv2d(16, 8, 3, sigma="learned")
    _, sigma = layer.generator(torch.randn(4, 16))
    torch.testing.assert_close(sigma, torch.full_like(sigma, 0.1))
    randomize_generator(layer)
    _, sigma = layer.generator(torch.randn(4, 16))
    assert sigma.std(0).max() > 0


def test_components_are_eval_values_regardless_of_mode_and_ones_when_disabled():
    layer = pedconv.PEDConv2d(4, 6, (1, 3), rank=2, components=("output", "kernel"))
    randomize_generator(layer)
    x = torch.randn(5, 4, 6, 6)
    train_vals = layer.train().cp_factors(x)
    eval_vals = layer.eval().cp_factors(x)
    for a, b in zip(train_vals, eval_vals):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    gamma, phi, psi = eval_vals
    assert gamma.shape == (5, 2, 6) and phi.shape == (5, 2, 4) and psi.shape == (5, 2, 3)
    assert torch.equal(phi, torch.ones_like(phi))
    assert not torch.allclose(gamma, torch.ones_like(gamma))
    assert layer.dynamic_weight(x).shape == (5, 6, 4, 1, 3)


def test_unbatched_input_and_batch_size_one_in_training():
    layer = pedconv.PEDConv2d(3, 5, 3, stride=2, padding=1)
    static = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(3, 9, 9)
    assert layer(x).shape == static(x).shape == (5, 5, 5)
    y = layer(torch.randn(1, 3, 9, 9))
    (y.sum() + pedconv.infomax_loss(layer)).backward()
    assert layer.weight.grad is not None and layer.generator.fc_share.weight.grad is not None
    assert layer.decoder[0].weight.grad is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
        dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4, rank=2),
        dict(in_channels=4, out_channels=6, kernel_size=1, components=("phi", "psi"), sigma="learned"),
        dict(in_channels=4, out_channels=6, kernel_size=(1, 3), stride=2, padding_mode="reflect", padding=1, groups=2),
    ],
)
def test_gradcheck_float64_training_mode(kwargs):
    layer = pedconv.PEDConv2d(**kwargs, dtype=torch.float64).train()
    randomize_generator(layer)
    x = torch.randn(2, kwargs["in_channels"], 5, 5, dtype=torch.float64, requires_grad=True)
    params = [layer.weight, layer.generator.fc_share.weight, layer.generator.head.weight]

    names = ["weight", "generator.fc_share.weight", "generator.head.weight"]

    def conv_out(x, *ps):
        torch.manual_seed(7)  # the same noise draw on every evaluation
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    def infomax(*ps):
        # The reconstruction target is the *detached* pooled x, so only parameters are
        # checked here: perturbing x moves the target, which the analytic grad ignores.
        conv_out(x.detach(), *ps)
        return layer.last_infomax_loss

    ps = [p.detach().clone().requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(conv_out, (x, *ps), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(infomax, tuple(ps), eps=1e-6, atol=1e-5)


def test_infomax_loss_sums_layers_and_strip_removes_decoders():
    model = nn.Sequential(
        pedconv.PEDConv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        pedconv.PEDConv2d(8, 8, 3, padding=1, infomax=False),
        nn.ReLU(),
        pedconv.PEDConv2d(8, 4, 1),
    )
    x = torch.randn(2, 3, 8, 8)
    model(x)
    total = pedconv.infomax_loss(model)
    assert torch.allclose(total, model[0].last_infomax_loss + model[4].last_infomax_loss)
    assert model[2].last_infomax_loss is None
    model.eval()
    y = model(x)
    assert float(pedconv.infomax_loss(model)) == 0.0
    assert float(pedconv.infomax_loss(nn.Linear(2, 2))) == 0.0
    pedconv.strip_infomax(model)
    assert not any(k.startswith(("0.decoder", "4.decoder")) for k in model.state_dict())
    torch.testing.assert_close(model(x), y, rtol=0, atol=0)
    model.train()(x)
    assert float(pedconv.infomax_loss(model)) == 0.0


def test_rank_above_one_without_noise_warns():
    with pytest.warns(UserWarning, match="rank > 1"):
        pedconv.PEDConv2d(4, 4, 3, rank=2, variational=False)


BAD = [
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=4), ValueError, "groups"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=0), ValueError, "groups"),
    (dict(in_channels=0, out_channels=6, kernel_size=3), ValueError, "in_channels"),
    (dict(in_channels=4.0, out_channels=6, kernel_size=3), TypeError, "in_channels"),
    (dict(in_channels=4, out_channels=6, kernel_size=0), ValueError, "kernel_size"),
    (dict(in_channels=4, out_channels=6, kernel_size=(3, 3, 3)), TypeError, "kernel_size"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding="same"), ValueError, "same"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding="full"), ValueError, "padding"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding=-1), ValueError, "padding"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding_mode="mirror"), ValueError, "padding_mode"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, rank=0), ValueError, "rank"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, rank=1.5), TypeError, "rank"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, components=()), ValueError, "components"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, components=("gamma", "beta")), ValueError, "components"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, reduction=0), ValueError, "reduction"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, sigma=-0.1), ValueError, "sigma"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, sigma="big"), ValueError, "sigma"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, sigma="learned", variational=False), ValueError, "sigma"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, activation="relu"), ValueError, "activation"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, strategy="fastest"), ValueError, "strategy"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, temperature=3), TypeError, "temperature"),
]


@pytest.mark.parametrize("kwargs,exc,word", BAD, ids=[w for _, _, w in BAD])
def test_bad_constructor_arguments_name_the_argument(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        pedconv.PEDConv2d(**kwargs)


def test_bad_input_names_the_expected_shape():
    layer = pedconv.PEDConv2d(4, 6, 3)
    with pytest.raises(ValueError, match="in_channels=4"):
        layer(torch.randn(2, 5, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        layer(torch.randn(2, 4, 8, 8, 1))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        layer(torch.randn(4, 8))
    with pytest.raises(TypeError, match="Tensor"):
        layer([1, 2, 3])


def test_constructor_mirrors_nn_conv2d_attributes():
    kw = dict(
        kernel_size=(3, 5),
        stride=(2, 1),
        padding=(1, 2),
        dilation=(1, 2),
        groups=2,
        bias=False,
        padding_mode="circular",
    )
    ped, conv = pedconv.PEDConv2d(4, 6, **kw), nn.Conv2d(4, 6, **kw)
    for attr in (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "padding_mode",
    ):
        assert getattr(ped, attr) == getattr(conv, attr), attr
    assert ped.weight.shape == conv.weight.shape and ped.bias is None
    same = pedconv.PEDConv2d(4, 6, 4, padding="same", dilation=3, dtype=torch.float64)
    assert same.padding == "same" and same.weight.dtype == torch.float64
    x = torch.randn(1, 4, 10, 11, dtype=torch.float64)
    assert same(x).shape == nn.Conv2d(4, 6, 4, padding="same", dilation=3)(x.float()).shape


@pytest.mark.parametrize("layer_cls", [pedconv.PEDConv2d, pedconv.SpatialPEDConv2d])
@pytest.mark.parametrize("training", [True, False])
def test_an_empty_batch_gives_an_empty_output_like_nn_conv2d(layer_cls, training):
    layer = layer_cls(4, 8, 3, stride=2, padding=1, padding_mode="reflect").train(training)
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, padding_mode="reflect", groups=layer.groups)
    x = torch.randn(0, 4, 7, 7, requires_grad=True)
    y = layer(x)
    assert y.shape == conv(x).shape == (0, 8, 4, 4)
    loss = pedconv.infomax_loss(layer)
    assert loss.item() == 0.0 and (layer.last_infomax_loss is not None) == training
    (y.sum() + loss).backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_an_empty_batch_through_a_converted_model_matches_the_static_model():
    static = pedconv.create_model("cifar_resnet20", num_classes=10, width=8).eval()
    dynamic = pedconv.convert(static).eval()
    x = torch.randn(0, 3, 28, 28)
    assert dynamic(x).shape == static(x).shape == (0, 10)


@pytest.mark.parametrize("layer_cls", [pedconv.PEDConv2d, pedconv.SpatialPEDConv2d])
def test_an_input_smaller_than_the_kernel_raises_like_nn_conv2d(layer_cls):
    with pytest.raises(RuntimeError):
        nn.Conv2d(4, 4, 3, dilation=3, padding=1)(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"spatial size \(3, 3\).*smaller than the kernel"):
        layer_cls(4, 4, 3, dilation=3, padding=1)(torch.randn(1, 4, 3, 3))
    assert layer_cls(4, 4, 3, dilation=3, padding=1)(torch.randn(1, 4, 5, 5)).shape == (1, 4, 1, 1)


@pytest.mark.parametrize("sigma", [float("nan"), float("inf"), -0.1])
def test_a_non_finite_or_negative_sigma_is_refused(sigma):
    with pytest.raises(ValueError, match="sigma must be a finite float >= 0"):
        pedconv.PEDConv2d(4, 4, 3, sigma=sigma)
