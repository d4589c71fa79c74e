"""The registered segmenters: UperNet and dilated PSPNet on (PEDConv-)ResNets (Table 3)."""

import pytest
import torch

import pedconv
from pedconv.tools.flops import compare_to_paper, count_parameters

SMALL = ["upernet_resnet18", "pedconv_upernet_resnet18", "pspnet_resnet18", "pedconv_pspnet_resnet18"]


def test_registered_names():
    names = pedconv.list_models()
    for base in ("upernet_resnet50", "upernet_resnet18", "pspnet_resnet50", "pspnet_resnet18"):
        assert base in names and f"pedconv_{base}" in names


@pytest.mark.parametrize("name", SMALL)
def test_logits_at_the_input_size_in_train_and_eval(name):
    model = pedconv.create_model(name, num_classes=5)
    has_ped = any(isinstance(m, pedconv.PEDConv2d) for m in model.modules())
    assert has_ped == name.startswith("pedconv_")
    x = torch.randn(2, 3, 64, 96)
    out = model.train()(x)
    assert out.shape == (2, 5, 64, 96)
    (out.square().mean() + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(model)).backward()
    assert all(p.grad is not None for n, p in model.encoder.named_parameters() if "decoder" not in n)
    with torch.no_grad():
        y = model.eval()(x)
    assert y.shape == (2, 5, 64, 96) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["pspnet_resnet18", "pedconv_pspnet_resnet50"])
def test_pspnet_encoder_is_dilated_to_output_stride_8(name):
    model = pedconv.create_model(name, num_classes=3).eval()
    with torch.no_grad():
        features = model.encoder(torch.zeros(1, 3, 64, 64))
    assert len(features) == 6 and features[-1].shape[-2:] == (8, 8)  # all five stages, stride 8
    assert tuple(model.encoder.layer4[0].conv2.dilation) == (4, 4)
    assert model.decoder.conv[0].kernel_size == (3, 3)  # PSPNet's / mmseg's 3x3 bottleneck


def test_conversion_covers_the_decoder_but_not_the_stem_or_the_shortcuts():
    model = pedconv.create_model("pedconv_upernet_resnet18", num_classes=3)
    assert type(model.encoder.conv1) is torch.nn.Conv2d
    assert type(model.encoder.layer2[0].downsample[0]) is torch.nn.Conv2d
    assert any(isinstance(m, pedconv.PEDConv2d) for m in model.decoder.modules())
    ranked = pedconv.create_model("pedconv_pspnet_resnet18", num_classes=3, rank=3, psp_out_channels=64)
    assert {m.rank for m in ranked.modules() if isinstance(m, pedconv.PEDConv2d)} == {3}
    assert ranked.decoder.conv[0].out_channels == 64


@pytest.mark.parametrize("name, params, paper", [
    ("upernet_resnet50", 64_106_198, 64.1e6),
    ("pedconv_upernet_resnet50", 72_745_641, 72.3e6),
    ("pspnet_resnet50", 47_272_662, 51.5e6),  # smp's PSP head has no auxiliary FCN head (README)
    ("pedconv_pspnet_resnet50", 54_934_250, 59.7e6),
])
def test_r50_parameter_counts(name, params, paper):
    assert count_parameters(pedconv.create_model(name, num_classes=150))[0] == params
    assert abs(params - paper) / paper < 0.09


@pytest.mark.slow
@pytest.mark.parametrize("name", ["upernet_resnet50", "pedconv_upernet_resnet50", "pspnet_resnet50",
                                  "pedconv_pspnet_resnet50"])
def test_r50_flops_at_512(name):
    row = compare_to_paper([name])[0]
    assert row["input_size"] == 512
    expected = 236.6e9 if "upernet" in name else 179.9e9  # README: UperNet +51% (paper 156G), PSPNet -3.7%
    assert abs(row["macs"] - expected) / expected < 0.01, row
