"""Every registered model: forward, backward, eval determinism, state_dict, trace; the registry."""

import pytest
import torch

import pedconv
from pedconv.baselines import CondConv2d, DyConv2d, ODConv2d
from pedconv.models import register_model

# Image classifiers; the detectors and segmenters (models/detection.py, models/segmentation.py)
# take other inputs and have their own tests.
MODELS = [n for n in pedconv.list_models() if pedconv.models.model_entrypoint(n).__module__ == "pedconv.models.zoo"]


_LAYER_OF = {"pedconv_": pedconv.PEDConv2d, "condconv_": CondConv2d, "dyconv_": DyConv2d, "odconv": ODConv2d}


def _input(name):
    return torch.randn(2, 3, 32, 32)  # every registered model runs at 32x32, which keeps this fast


@pytest.mark.parametrize("name", MODELS)
def test_registered_model(name):
    torch.manual_seed(0)
    model = pedconv.create_model(name, num_classes=7)
    x = _input(name)
    out = model.train()(x)
    assert out.shape == (2, 7)
    (out.square().mean() + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(model)).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "decoder" not in n)
    model.eval()
    with torch.no_grad():
        y1, y2 = model(x), model(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    with torch.device("meta"):  # a fresh instance, built without initialising (deferred init works for every model:
        other = pedconv.create_model(name, num_classes=7)  # FSDP's, or fast loading; nothing computed on "meta")
    assert all(t.is_meta for t in other.state_dict().values())
    other = other.to_empty(device="cpu").eval()
    other.load_state_dict(model.state_dict())  # then every tensor it computes with comes from the state dict
    with torch.no_grad():
        torch.testing.assert_close(other(x), y1, rtol=0, atol=0)
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), y1, atol=1e-4, rtol=1e-4)
    for prefix, layer in _LAYER_OF.items():
        if name.startswith(prefix):
            assert any(isinstance(m, layer) for m in model.modules())
    if name.endswith("_sd"):
        assert any(isinstance(m, pedconv.SpatialPEDConv2d) for m in model.modules())


def test_registry_errors():
    with pytest.raises(ValueError, match="pedconv_resnet18"):
        pedconv.create_model("pedconv_resnet81")
    with pytest.raises(ValueError, match="already registered"):
        register_model(pedconv.models.zoo.resnet18)
    assert pedconv.list_models("pedconv_resnet50_*") == [
        "pedconv_resnet50_deterministic",
        "pedconv_resnet50_gamma",
        "pedconv_resnet50_phi",
        "pedconv_resnet50_psi",
        "pedconv_resnet50_sd",
    ]


def test_builder_kwargs_reach_the_layers():
    model = pedconv.create_model("pedconv_cifar_resnet20", rank=2, components=("gamma",), sigma=0.2)
    layers = [m for m in model.modules() if isinstance(m, pedconv.PEDConv2d)]
    assert len(layers) == 18 and all(layer.rank == 2 and layer.components == ("gamma",) for layer in layers)
    dw = pedconv.create_model("pedconv_mobilenetv1_100", kinds=("depthwise",))
    assert all(layer.groups == layer.in_channels for layer in dw.modules() if isinstance(layer, pedconv.PEDConv2d))


def test_create_model_defaults_to_each_builders_own_number_of_classes():
    """Without num_classes, the builder's default: 91 COCO classes for the detectors, 150 ADE20K
    classes for the segmenters, 10 for the CIFAR-style nets (it used to force 1000 on every one)."""
    ssd = pedconv.create_model("ssd300_resnet50")
    assert ssd.head.classification_head.module_list[0].out_channels % 91 == 0  # anchors x 91 classes
    assert ssd.head.classification_head.module_list[0].out_channels // 91 in (4, 6)
    assert sum(p.numel() for p in ssd.parameters()) < 30e6  # the paper's 22.89M, not a 1000-class head
    upernet = pedconv.create_model("upernet_resnet18").eval()
    assert upernet(torch.randn(1, 3, 64, 64)).shape[1] == 150
    assert pedconv.create_model("pedconv_cifar_resnet20", width=8).fc.out_features == 10
    assert pedconv.create_model("resnet18").fc.out_features == 1000
    assert pedconv.create_model("resnet18", num_classes=7).fc.out_features == 7


def test_every_builder_has_a_default_number_of_classes():
    import inspect

    from pedconv.models._registry import _MODELS

    for name, builder in _MODELS.items():
        default = inspect.signature(builder).parameters["num_classes"].default
        assert isinstance(default, int) and default > 1, name


@pytest.mark.parametrize("name", ["ssd300_resnet18", "pedconv_ssd300_resnet18", "fasterrcnn_resnet18_fpn",
                                  "upernet_resnet18", "pedconv_pspnet_resnet18"])
def test_task_builders_refuse_keywords_their_libraries_would_drop(name):
    """torchvision's detectors and smp's models take **kwargs and ignore unknown ones; the builders
    refuse them (a typo, or static_weights that they cannot use, used to do nothing)."""
    with pytest.raises(TypeError, match=rf"{name.removeprefix('pedconv_')}\(\) got an unexpected keyword argument "
                                        "'static_weight'"):
        pedconv.create_model(name, static_weight={})
    if "pspnet" in name:  # what smp passes on to the encoder still works
        assert pedconv.create_model(name, output_stride=16).encoder.layer4[0].conv1.dilation == (2, 2)

