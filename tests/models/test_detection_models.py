"""The registered detectors: SSD300 and Faster R-CNN + FPN on (PEDConv-)ResNets (Table 2)."""

import pytest
import torch

import pedconv
from pedconv.models import PAPER_NUMBERS
from pedconv.tools.flops import compare_to_paper, count_parameters

SMALL = ["ssd300_resnet18", "pedconv_ssd300_resnet18", "fasterrcnn_resnet18_fpn", "pedconv_fasterrcnn_resnet18_fpn"]


# Small and few proposals / sampled boxes: the CPU test budget.
_FRCNN_SMALL = dict(min_size=64, max_size=64, rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                    rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=32,
                    rpn_batch_size_per_image=64)


def _build(name, **kwargs):
    size = {"image_size": 64} if "ssd" in name else _FRCNN_SMALL
    return pedconv.create_model(name, num_classes=4, **size, **kwargs)


def _targets():
    return [{"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([1])},
            {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0], [60.0, 60.0, 120.0, 110.0]]),
             "labels": torch.tensor([2, 3])}]


def test_registered_names():
    names = pedconv.list_models()
    for base in ("ssd300_resnet50", "ssd300_resnet18", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet18_fpn"):
        assert base in names and f"pedconv_{base}" in names


@pytest.mark.parametrize("name", SMALL)
def test_train_losses_and_eval_detections_at_64px(name):
    model = _build(name)
    has_ped = any(isinstance(m, pedconv.PEDConv2d) for m in model.modules())
    assert has_ped == name.startswith("pedconv_")
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]  # resized to 64 by the model
    losses = model.train()(images, _targets())
    assert losses and all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    loss = sum(losses.values()) + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(model)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "decoder" not in n and "backbone" in n]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert n == 0 or (det["labels"].min() >= 1 and det["labels"].max() <= 3)  # 0 is the background


def test_ssd_feature_maps_and_head():
    model = pedconv.create_model("ssd300_resnet50", num_classes=81)
    assert model.backbone.out_channels == [1024, 512, 512, 256, 256, 256]
    assert model.anchor_generator.num_anchors_per_location() == [4, 6, 6, 6, 4, 4]
    assert model.backbone.body[-1][0].conv2.stride == (1, 1)  # layer3 at stride 8: 38x38 at 300 px
    ped = pedconv.create_model("pedconv_ssd300_resnet50", num_classes=81)
    assert not any(isinstance(m, pedconv.PEDConv2d) for m in ped.head.modules())  # head static
    assert isinstance(ped.backbone.extras[0][3], pedconv.PEDConv2d)
    assert type(ped.backbone.body[0]) is torch.nn.Conv2d  # stem static
    small = pedconv.create_model("ssd300_resnet18", num_classes=3).backbone.eval()
    with torch.no_grad():
        maps = small(torch.zeros(1, 3, 300, 300))
    assert [m.shape[-1] for m in maps.values()] == [38, 19, 10, 5, 3, 1]
    tiny = pedconv.create_model("ssd300_resnet18", num_classes=3, image_size=96).backbone.eval()
    with torch.no_grad():
        assert [m.shape[-1] for m in tiny(torch.zeros(1, 3, 96, 96)).values()] == [12, 6, 3, 2, 2, 2]


def test_pedconv_options_reach_the_layers_and_the_rest_reaches_the_detector():
    model = _build("pedconv_ssd300_resnet18", rank=2, detections_per_img=7)
    assert {m.rank for m in model.modules() if isinstance(m, pedconv.PEDConv2d)} == {2}
    assert model.detections_per_img == 7
    frcnn = _build("pedconv_fasterrcnn_resnet18_fpn", box_detections_per_img=9)
    assert frcnn.roi_heads.detections_per_img == 9
    assert not any(isinstance(m, pedconv.PEDConv2d) for m in frcnn.backbone.fpn.modules())
    assert all(p.requires_grad for p in frcnn.parameters())  # no pretrained weights: nothing frozen


@pytest.mark.parametrize("name, num_classes, params", [
    ("ssd300_resnet50", 81, 22_894_902),  # Table 2: 22.9M
    ("pedconv_ssd300_resnet50", 81, 24_404_767),  # Table 2: 24.4M
    ("fasterrcnn_resnet50_fpn", 91, 41_808_406),
    ("pedconv_fasterrcnn_resnet50_fpn", 91, 44_825_470),
])
def test_r50_parameter_counts(name, num_classes, params):
    assert count_parameters(pedconv.create_model(name, num_classes=num_classes))[0] == params
    if name in PAPER_NUMBERS:
        assert abs(params - PAPER_NUMBERS[name]["params"]) / PAPER_NUMBERS[name]["params"] < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ssd300_resnet50", "pedconv_ssd300_resnet50"])
def test_ssd300_r50_flops_match_table_2(name):
    row = compare_to_paper([name])[0]
    assert row["input_size"] == 300
    assert abs(row["params_diff_pct"]) <= 1.0 and abs(row["macs_diff_pct"]) <= 1.0, row


@pytest.mark.parametrize("name", ["ssd300_resnet18", "fasterrcnn_resnet18_fpn", "pedconv_fasterrcnn_resnet18_fpn"])
def test_every_detector_takes_image_size(name):
    """One name for the input size across the detection builders (the task passes --img-size as it):
    SSD's square, Faster R-CNN's shorter side (torchvision's min_size, which still wins when given)."""
    model = pedconv.create_model(name, num_classes=3, image_size=96)
    assert model.transform.min_size == (96,)
    if "fasterrcnn" in name:
        assert pedconv.create_model(name, num_classes=3, image_size=96, min_size=80).transform.min_size == (80,)
