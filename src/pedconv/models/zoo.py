"""Thin registered builders: the paper's networks, static and with PEDConv.

Architectures come from torchvision and timm (CIFAR-style ResNets from
:mod:`pedconv.models.cifar_resnet`); the PEDConv versions are :func:`pedconv.convert` with
the conversion policy of the paper / the authors' code. Keyword arguments of a
``pedconv_*`` builder go to :func:`pedconv.convert`, so every layer option and policy
(``rank``, ``components``, ``kinds``, ``depth``, ...) is available, and the caller's
values win over the builder's defaults.

Every converting builder also takes ``static_weights``: a state dict of its static
architecture (e.g. a trained ``cifar_resnet20``), loaded before the conversion, which then
preserves the network's function, so fine-tuning starts from the pretrained static network
(``pedconv train --init-from RUN``).
"""

from __future__ import annotations

from typing import Any, Callable

import timm
import torch.nn as nn
import torchvision
from timm.layers import SelectiveKernel

from ..baselines import CondConv2d, DCDConv2d, DCDLinear, DyConv2d, ODConv2d, WeightNetConv2d
from ..baselines.kernelwarehouse import convert_to_kernelwarehouse
from ..convert import convert, layer_options
from ..method import PEDConv2d, SpatialPEDConv2d
from ._registry import register_model
from .cifar_resnet import cifar_resnet

__all__: list[str] = []

# The authors' ResNets keep the stem and the downsample 1x1 convs static.
_RESNET_POLICY = {"keep_shortcut": True}
# EfficientNet's squeeze-excitation 1x1 convs act on 1x1 maps: they stay static.
_EFFICIENTNET_POLICY = {"exclude": ["*.se.*"]}


def _start_from_static(model: nn.Module, kwargs: dict) -> dict:
    """Load ``kwargs["static_weights"]`` (a state dict of the static architecture, e.g. a trained
    run's) into ``model`` before it is converted; the conversion then keeps its function. Returns
    the remaining keyword arguments."""
    weights = kwargs.pop("static_weights", None)
    if weights is None:
        return kwargs
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"static_weights do not fit the static {type(model).__name__}: {first}") from None
    return {**kwargs, "preserve_function": True}


def _ped(model: nn.Module, policy: dict, kwargs: dict, layer: Any = PEDConv2d) -> nn.Module:
    kwargs = _start_from_static(model, dict(kwargs))
    return convert(model, inplace=True, layer=layer, **{**policy, **kwargs})


def _baseline(model: nn.Module, layer: Any, policy: dict, kwargs: dict) -> nn.Module:
    # From scratch: fresh experts/kernels, not copies of the static weights; from static_weights:
    # the layer's function-preserving conversion (CondConv refuses it, with its reason).
    kwargs = _start_from_static(model, {"preserve_function": False, **kwargs})
    return convert(model, inplace=True, layer=layer, **{**policy, **kwargs})


def _variant(name: str, base: Callable[..., nn.Module], doc: str, **defaults: Any) -> None:
    """Register ``name`` as ``base`` with different defaults (a named ablation row)."""

    def builder(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
        return base(num_classes=num_classes, **{**defaults, **kwargs})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    register_model(builder)


# ----------------------------------------------------------------------------- ResNets
@register_model
def resnet18(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-18 (static baseline, Table 1b)."""
    return torchvision.models.resnet18(num_classes=num_classes, **kwargs)


@register_model
def resnet50(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-50 (static baseline, Table 1b)."""
    return torchvision.models.resnet50(num_classes=num_classes, **kwargs)


@register_model
def resnet101(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-101 (static baseline, Table 6)."""
    return torchvision.models.resnet101(num_classes=num_classes, **kwargs)


@register_model
def pedconv_resnet18(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """PEDConv-ResNet-18 (Table 1b): every conv but the stem and the shortcuts."""
    return _ped(torchvision.models.resnet18(num_classes=num_classes), _RESNET_POLICY, kwargs)


@register_model
def pedconv_resnet50(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """PEDConv-ResNet-50 (Table 1b)."""
    return _ped(torchvision.models.resnet50(num_classes=num_classes), _RESNET_POLICY, kwargs)


@register_model
def pedconv_resnet101(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """PEDConv-ResNet-101."""
    return _ped(torchvision.models.resnet101(num_classes=num_classes), _RESNET_POLICY, kwargs)


# ------------------------------------------------------------------------ mobile nets
@register_model
def mobilenetv1_100(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """timm MobileNetV1 1.0 (static baseline, Table 1a)."""
    return timm.create_model("mobilenetv1_100", num_classes=num_classes, **kwargs)


@register_model
def pedconv_mobilenetv1_100(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """PEDConv-MobileNetV1 (Table 1a; ``kinds=`` / ``depth=`` give Table 5c/5d)."""
    return _ped(timm.create_model("mobilenetv1_100", num_classes=num_classes), {}, kwargs)


@register_model
def mobilenet_v2(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """torchvision MobileNetV2 (static baseline, Table 1a)."""
    return torchvision.models.mobilenet_v2(num_classes=num_classes, **kwargs)


@register_model
def pedconv_mobilenet_v2(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """PEDConv-MobileNetV2 (Table 1a)."""
    return _ped(torchvision.models.mobilenet_v2(num_classes=num_classes), {}, kwargs)


@register_model
def efficientnet_b0(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """timm EfficientNet-B0 (static baseline, Table 1a)."""
    return timm.create_model("efficientnet_b0", num_classes=num_classes, **kwargs)


@register_model
def pedconv_efficientnet_b0(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """PEDConv-EfficientNet-B0 (Table 1a); squeeze-excitation convs stay static."""
    return _ped(timm.create_model("efficientnet_b0", num_classes=num_classes), _EFFICIENTNET_POLICY, kwargs)


# ------------------------------------------------------------ small images (28-32 px)
@register_model
def cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """CIFAR-style ResNet-20 (3x3 stem, no max-pool) for 28-32 px images."""
    return cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes, **kwargs)


@register_model
def pedconv_cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """PEDConv CIFAR-style ResNet-20 (downsample shortcuts static, as the authors' ResNets)."""
    model = cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes)
    return _ped(model, _RESNET_POLICY, kwargs)


@register_model
def condconv_cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """CondConv CIFAR-style ResNet-20 (4 experts; stem and shortcuts static, as the PEDConv one)."""
    model = cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes)
    return _baseline(model, CondConv2d, _RESNET_POLICY, kwargs)


@register_model
def dyconv_cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """DY-Conv CIFAR-style ResNet-20 (K=4; stem and shortcuts static, as the PEDConv one)."""
    model = cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes)
    return _baseline(model, DyConv2d, _RESNET_POLICY, kwargs)


@register_model
def odconv_cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """ODConv (1 kernel) CIFAR-style ResNet-20 (stem and shortcuts static)."""
    model = cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes)
    return _baseline(model, ODConv2d, _RESNET_POLICY, kwargs)


# ------------------------------------------------------- spatial-dynamic (Sec. 4.6, Table 6)
def _spatial_resnet(model: nn.Module, kwargs: dict) -> nn.Module:
    # The 3x3 convs (conv2 of every bottleneck) become spatial-dynamic PEDConv on a
    # depthwise base; the remaining 1x1 convs are PEDConv as in PEDConv-ResNet. This is
    # the policy that reproduces Table 6's parameter counts (see the docs, "Models and their size").
    spatial_opts = {k: v for k, v in kwargs.items() if k in layer_options(SpatialPEDConv2d)}
    convert(model, inplace=True, layer=SpatialPEDConv2d, include="layer*.conv2", preserve_function=False,
            **spatial_opts)
    return _ped(model, _RESNET_POLICY, kwargs)


@register_model
def pedconv_resnet50_sd(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Spatial-dynamic PEDConv-ResNet-50 (Table 6)."""
    return _spatial_resnet(torchvision.models.resnet50(num_classes=num_classes), kwargs)


@register_model
def pedconv_resnet101_sd(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Spatial-dynamic PEDConv-ResNet-101 (Table 6)."""
    return _spatial_resnet(torchvision.models.resnet101(num_classes=num_classes), kwargs)


# --------------------------------------------------------------- Table 5 ablation rows
_variant("pedconv_resnet18_rank4", pedconv_resnet18, "PEDConv-ResNet-18, CP rank 4 (Table 5b).", rank=4)
_variant("pedconv_resnet18_rank8", pedconv_resnet18, "PEDConv-ResNet-18, CP rank 8 (Table 5b).", rank=8)
for _c in ("gamma", "phi", "psi"):
    _variant(f"pedconv_resnet50_{_c}", pedconv_resnet50, f"PEDConv-ResNet-50 with {_c} only (Table 5a).",
             components=(_c,))
_variant("pedconv_resnet50_deterministic", pedconv_resnet50,
         "PEDConv-ResNet-50 without sampling (Table 5a, non-variational).", variational=False)
_variant("pedconv_mobilenetv1_100_pw", pedconv_mobilenetv1_100,
         "PEDConv-MobileNetV1 on pointwise convs only (Table 5c).", kinds=("pointwise",))
_variant("pedconv_mobilenetv1_100_dw", pedconv_mobilenetv1_100,
         "PEDConv-MobileNetV1 on depthwise convs only (Table 5c).", kinds=("depthwise",))
_variant("pedconv_mobilenetv1_100_shallow", pedconv_mobilenetv1_100,
         "PEDConv-MobileNetV1 on the shallower half of the convs (Table 5d).", depth="shallow")
_variant("pedconv_mobilenetv1_100_deep", pedconv_mobilenetv1_100,
         "PEDConv-MobileNetV1 on the deeper half of the convs (Table 5d).", depth="deep")


# ------------------------------------------------------------------------ baselines
# Which convs are dynamic follows the papers where that reproduces their parameter counts;
# otherwise every conv but the stem (the docs, "Models and their size").
@register_model
def condconv_resnet50(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """CondConv-ResNet-50: 8 experts (``num_experts=``) on the 3x3 convs, the policy that
    gives the 104.8M parameters reported for it."""
    return _baseline(torchvision.models.resnet50(num_classes=num_classes), CondConv2d,
                     {"include": "layer*.conv2"}, {"num_experts": 8, **kwargs})


@register_model
def condconv_mobilenet_v2(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """CondConv-MobileNetV2 (8 experts unless ``num_experts=``)."""
    return _baseline(torchvision.models.mobilenet_v2(num_classes=num_classes), CondConv2d, {},
                     {"num_experts": 8, **kwargs})


@register_model
def dyconv_resnet18(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """DY-Conv-ResNet-18 (K=4)."""
    return _baseline(torchvision.models.resnet18(num_classes=num_classes), DyConv2d, {}, kwargs)


@register_model
def dyconv_mobilenet_v2(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """DY-Conv-MobileNetV2 (K=4): every conv but the stem and the final 1x1 conv, the policy
    that gives the 11.1M parameters reported for it."""
    return _baseline(torchvision.models.mobilenet_v2(num_classes=num_classes), DyConv2d,
                     {"exclude": "features.18.*"}, kwargs)


@register_model
def odconv_resnet18(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """ODConv-ResNet-18 with 1 kernel ("ODConv 1x")."""
    return _baseline(torchvision.models.resnet18(num_classes=num_classes), ODConv2d, _RESNET_POLICY, kwargs)


_variant("odconv4x_resnet18", odconv_resnet18, 'ODConv-ResNet-18 with 4 kernels ("ODConv 4x").', num_kernels=4)


@register_model
def odconv_resnet50(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """ODConv-ResNet-50 with 1 kernel ("ODConv 1x")."""
    return _baseline(torchvision.models.resnet50(num_classes=num_classes), ODConv2d, _RESNET_POLICY, kwargs)


_variant("odconv4x_resnet50", odconv_resnet50, 'ODConv-ResNet-50 with 4 kernels ("ODConv 4x").', num_kernels=4)


# ------------------------------------------------------------------ baselines: DCD
# DCD (Li et al., ICLR 2021) as the official networks (github.com/liyunsheng13/dcd) build it,
# whose counts are the published sizes: ResNets convert every block conv (stem and shortcuts
# static) with their latent rule and get the dynamic classifier; MobileNetV2 converts the
# pointwise convs of the expanding blocks (pooling 2x2 before the expanding ones).
_DCD_POLICY: dict = {"keep_shortcut": True}


def _dcd(model: nn.Module, policy: dict, kwargs: dict, classifier: str = "") -> nn.Module:
    """:func:`_baseline` with DCD, then (if ``classifier`` names it) the classifier made a
    :class:`DCDLinear`, keeping its function when the convs keep theirs."""
    preserve = "static_weights" in kwargs or bool(kwargs.get("preserve_function", False))
    model = _baseline(model, DCDConv2d, policy, kwargs)
    if classifier:
        setattr(model, classifier, DCDLinear.from_linear(getattr(model, classifier), preserve_function=preserve))
    return model


@register_model
def dcd_resnet18(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """DCD-ResNet-18 (Table 1b): L = int(sqrt(4 Cin)), global pooling, dynamic classifier. (The
    official code pools 2x2 here, 14.7M parameters; global pooling counts the published 14.0M.)"""
    return _dcd(torchvision.models.resnet18(num_classes=num_classes), _DCD_POLICY,
                {"latent_dim": "sqrt4", **kwargs}, classifier="fc")


@register_model
def dcd_resnet50(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """DCD-ResNet-50 (Table 1b): every bottleneck conv, L = int(sqrt(Cin)), dynamic classifier."""
    return _dcd(torchvision.models.resnet50(num_classes=num_classes), _DCD_POLICY,
                {"latent_dim": "sqrt", **kwargs}, classifier="fc")


@register_model
def dcd_mobilenet_v2(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """DCD-MobileNetV2 (Table 1a): the pointwise convs of the expanding blocks, the official
    pointwise latent rule and 2x2 pooling before expanding convs, branch reduction 16 and a static
    classifier: the configuration that counts the published 5.5M (the official defaults,
    reduction 8 and the dynamic classifier, count 7.4M)."""
    return _dcd(torchvision.models.mobilenet_v2(num_classes=num_classes),
                {"kinds": ("pointwise",), "exclude": ["features.1.*", "features.18.*"]},
                {"latent_dim": "pointwise", "pool": "expand", "reduction": 16, **kwargs})


@register_model
def dcd_cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """DCD CIFAR-style ResNet-20 (stem and shortcuts static)."""
    model = cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes)
    return _dcd(model, _RESNET_POLICY, kwargs)


# ------------------------------------------------------------- baselines: WeightNet
@register_model
def weightnet_resnet50(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """WeightNet-ResNet-50 (Table 1b): every conv but the stem and the shortcuts, M = G = 2 and
    reduction 8, the configuration that counts the published 31.1M (30.58M; the paper does not give
    its ResNet-50 settings, and the official ShuffleNetV2 code's reduction 16 counts 28.16M)."""
    return _baseline(torchvision.models.resnet50(num_classes=num_classes), WeightNetConv2d, _RESNET_POLICY,
                     {"reduction": 8, **kwargs})


@register_model
def weightnet_cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """WeightNet CIFAR-style ResNet-20 (M = G = 2; stem and shortcuts static)."""
    model = cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes)
    return _baseline(model, WeightNetConv2d, _RESNET_POLICY, kwargs)


# ---------------------------------------------------- KernelWarehouse (Li & Yao, ICML 2024)
# "KW 1x": one warehouse per stage of 1x1-tap cells (KW's spatial partition) holding as many
# cells as its layers cut into; stem and classifier static. ``spatial=False``: per kernel size.
_KW_STAGES = ["layer1", "layer2", "layer3", "layer4"]


@register_model
def kw_resnet18(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """KernelWarehouse-ResNet-18, "KW 1x" (downsample convs included in their stage's warehouse)."""
    return convert_to_kernelwarehouse(torchvision.models.resnet18(num_classes=num_classes), _KW_STAGES, **kwargs)


@register_model
def kw_resnet50(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """KernelWarehouse-ResNet-50, "KW 1x" (downsample convs included in their stage's warehouse)."""
    return convert_to_kernelwarehouse(torchvision.models.resnet50(num_classes=num_classes), _KW_STAGES, **kwargs)


@register_model
def kw_cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """KernelWarehouse CIFAR-style ResNet-20, "KW 1x" (stem and shortcuts static, as the ODConv one)."""
    model = cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes)
    return convert_to_kernelwarehouse(model, _KW_STAGES[:3], exclude=("downsample",), **kwargs)


# ------------------------------------------------ SK-Nets (Li et al., CVPR 2019), from timm
@register_model
def skresnext50_32x4d(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """timm's SK-ResNeXt-50 (32x4d): the variant whose 27.5M parameters match the
    "SK-ResNet-50" row of the PEDConv paper's Table 1b (timm's ``skresnet50`` has 25.8M)."""
    return timm.create_model("skresnext50_32x4d", pretrained=False, num_classes=num_classes, **kwargs)


@register_model
def skresnet18(*, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """timm's SK-ResNet-18."""
    return timm.create_model("skresnet18", pretrained=False, num_classes=num_classes, **kwargs)


@register_model
def sk_cifar_resnet20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16, **kwargs: Any) -> nn.Module:
    """SK CIFAR-style ResNet-20: each block's first 3x3 conv (and its BatchNorm) becomes timm's
    ``SelectiveKernel`` (a 3x3 and a dilated 3x3 path, each conv-BN-ReLU on half the input
    channels, mixed by a per-channel softmax attention), as in timm's SK-ResNet-18 block and with
    its attention settings (``rd_ratio=1/8``, ``rd_divisor=16``); ``kwargs`` override them."""
    model = cifar_resnet(depth=20, width=width, in_chans=in_chans, num_classes=num_classes)
    sk_kwargs = {"rd_ratio": 1 / 8, "rd_divisor": 16, "split_input": True, **kwargs}
    for stage in (model.layer1, model.layer2, model.layer3):
        for block in stage:
            conv = block.conv1
            assert isinstance(conv, nn.Conv2d)
            block.conv1 = SelectiveKernel(conv.in_channels, conv.out_channels, stride=conv.stride[0], **sk_kwargs)
            block.bn1 = nn.Identity()  # the SK paths carry their own BatchNorm and ReLU
    return model
