"""pedconv.convert: policies, structure preservation and exact function preservation."""

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import pedconv


def _n_ped(model):
    return sum(isinstance(m, pedconv.PEDConv2d) for m in model.modules())


def _make_trained_like(model, seed=0):
    """Random BN statistics and affine params, so a broken conversion cannot hide behind BN init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _conv_outputs(model, x):
    """Outputs of every conv-like module, by name."""
    outs, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, pedconv.PEDConv2d)):
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=name: outs.__setitem__(n, o)))
    with torch.no_grad():
        y = model(x)
    for h in hooks:
        h.remove()
    return y, outs


MODELS = {
    "tv_resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "tv_mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
    "timm_mobilenetv1_100": lambda: timm.create_model("mobilenetv1_100", num_classes=10),
    "timm_efficientnet_b0": lambda: timm.create_model("efficientnet_b0", num_classes=10),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(
    "options",
    [dict(), dict(activation="sigmoid"), dict(rank=2, components=("gamma", "psi"))],
    ids=["default", "authors_sigmoid", "rank2"],
)
def test_conversion_preserves_function_at_every_layer(name, options):
    torch.manual_seed(0)
    static = _make_trained_like(MODELS[name]())
    converted = pedconv.convert(static, **options)
    assert _n_ped(converted) > 0
    x = torch.randn(2, 3, 64, 64)
    y_static, outs_static = _conv_outputs(static, x)
    y_conv, outs_conv = _conv_outputs(converted, x)
    assert outs_static.keys() == outs_conv.keys()
    for key, ref in outs_static.items():
        torch.testing.assert_close(outs_conv[key], ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item(), msg=key)
    torch.testing.assert_close(y_conv, y_static, rtol=1e-5, atol=1e-5 * y_static.abs().max().item())


def test_without_preserve_function_weight_is_plain_copy_and_output_changes():
    conv = nn.Conv2d(8, 8, 3, padding=1).eval()
    ped = pedconv.PEDConv2d.from_conv(conv, activation="sigmoid", preserve_function=False).eval()
    assert torch.equal(ped.weight, conv.weight)
    x = torch.randn(1, 8, 5, 5)
    # Components start at sigmoid(0)=0.5, so the conv part is scaled by 1/8.
    torch.testing.assert_close(ped(x) - ped.bias.view(1, -1, 1, 1), (conv(x) - conv.bias.view(1, -1, 1, 1)) / 8)
    folded = pedconv.PEDConv2d.from_conv(conv, activation="sigmoid")
    torch.testing.assert_close(folded.weight, conv.weight * 8)


def test_default_policy_skips_only_the_first_conv():
    model = torchvision.models.resnet18()
    names = [n for n, m in model.named_modules() if type(m) is nn.Conv2d]
    converted = pedconv.convert(model)
    assert type(converted.conv1) is nn.Conv2d
    assert _n_ped(converted) == len(names) - 1
    everything = pedconv.convert(model, skip_first=False)
    assert _n_ped(everything) == len(names)


def test_keep_shortcut_leaves_downsample_static():
    converted = pedconv.convert(torchvision.models.resnet50(), keep_shortcut=True)
    assert type(converted.layer1[0].downsample[0]) is nn.Conv2d
    assert isinstance(converted.layer1[0].conv2, pedconv.PEDConv2d)
    assert _n_ped(converted) == 16 * 3  # every bottleneck conv, no stem, no shortcut


@pytest.mark.parametrize("kinds", [("pointwise",), ("depthwise",), ("pointwise", "depthwise")])
def test_kinds_select_by_conv_type(kinds):
    model = timm.create_model("mobilenetv1_100")
    converted = pedconv.convert(model, kinds=kinds)
    seen = set()
    for name, m in converted.named_modules():
        if isinstance(m, pedconv.PEDConv2d):
            seen.add("depthwise" if m.groups == m.in_channels else "pointwise" if m.kernel_size == (1, 1) else "other")
        elif type(m) is nn.Conv2d and name != "conv_stem":
            assert pedconv.conv_kind(m) not in kinds
    assert seen == set(kinds)


def test_depth_halves_partition_the_eligible_layers():
    model = timm.create_model("mobilenetv1_100")
    all_names = pedconv.select_convs(model)
    shallow = pedconv.select_convs(model, depth="shallow")
    deep = pedconv.select_convs(model, depth="deep")
    assert shallow + deep == all_names and abs(len(shallow) - len(deep)) <= 1
    n = len(all_names)
    assert n == 26  # 13 depthwise + 13 pointwise after the stem
    assert pedconv.select_convs(model, depth=(0.25, 0.5)) == [all_names[j] for j in range(n) if 0.25 * n <= j < 0.5 * n]
    converted = pedconv.convert(model, depth="deep")
    assert {n for n, m in converted.named_modules() if isinstance(m, pedconv.PEDConv2d)} == set(deep)


def test_include_exclude_and_filter():
    model = torchvision.models.resnet18()
    only4 = pedconv.select_convs(model, include="layer4.*")
    assert only4 and all(n.startswith("layer4.") for n in only4)
    no4 = pedconv.select_convs(model, exclude=["layer4.*", "layer3.0.*"])
    assert not any(n.startswith(("layer4.", "layer3.0.")) for n in no4)
    wide = pedconv.select_convs(model, filter=lambda n, m: m.out_channels >= 256)
    assert wide and all(model.get_submodule(n).out_channels >= 256 for n in wide)


def test_copy_vs_inplace_and_mode_dtype_kept():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1)).double().eval()
    converted = pedconv.convert(model)
    assert converted is not model and type(model[1]) is nn.Conv2d
    assert isinstance(converted[1], pedconv.PEDConv2d) and not converted[1].training
    assert converted[1].weight.dtype == torch.float64
    same = pedconv.convert(model, inplace=True)
    assert same is model and isinstance(model[2], pedconv.PEDConv2d)
    # Converting again never wraps the new layers (and says that nothing was left to convert).
    with pytest.warns(UserWarning, match="nothing converted"):
        again = pedconv.convert(model)
    assert _n_ped(again) == 2


def test_subclasses_such_as_timm_conv2dsame_are_left_alone():
    from timm.layers import Conv2dSame

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Conv2dSame(4, 4, 3, stride=2), nn.Conv2d(4, 4, 3))
    converted = pedconv.convert(model)
    assert type(converted[1]) is Conv2dSame and isinstance(converted[2], pedconv.PEDConv2d)
    with pytest.raises(TypeError, match="Conv2dSame"):
        pedconv.PEDConv2d.from_conv(Conv2dSame(4, 4, 3))


def test_a_bare_conv_converts_to_a_layer():
    layer = pedconv.convert(nn.Conv2d(4, 8, 3), rank=3, sigma=0.2)
    assert isinstance(layer, pedconv.PEDConv2d) and layer.rank == 3 and layer.sigma == 0.2


def test_bad_options_raise_with_the_argument_name():
    model = torchvision.models.resnet18()
    with pytest.raises(TypeError, match="rnak"):
        pedconv.convert(model, rnak=2)
    with pytest.raises(ValueError, match="kinds"):
        pedconv.convert(model, kinds=("pointwise", "dilated"))
    with pytest.raises(ValueError, match="depth"):
        pedconv.convert(model, depth="middle")
    with pytest.raises(ValueError, match="depth"):
        pedconv.convert(model, depth=(0.6, 0.2))
    with pytest.raises(ValueError, match="rank"):
        pedconv.convert(model, rank=0)
    with pytest.raises(TypeError, match="include"):
        pedconv.convert(model, include=[3])


def test_torchscript_modules_are_refused_with_a_clear_error():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3))
    for compiled in (torch.jit.script(net), torch.jit.trace(net, torch.randn(1, 3, 8, 8))):
        with pytest.raises(TypeError, match="TorchScript"):
            pedconv.convert(compiled)


def test_converting_nothing_warns_and_converting_something_does_not(recwarn):
    with pytest.warns(UserWarning, match="nothing converted"):
        out = pedconv.convert(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert isinstance(out[0], torch.nn.Linear)
    with pytest.warns(UserWarning, match="nothing converted"):
        pedconv.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3)), kinds=["depthwise"])
    pedconv.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3)))
    assert not [w for w in recwarn if "nothing converted" in str(w.message)]


def test_unknown_options_name_both_the_policy_and_the_layer_options():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['skip_frist'\].*policy options.*PEDConv2d options"):
        pedconv.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), skip_frist=False)
