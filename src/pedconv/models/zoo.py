"""Thin registered builders: the paper's networks, static and with PEDConv.

Architectures come from torchvision and timm (CIFAR-style ResNets from
:mod:`pedconv.models.cifar_resnet`); the PEDConv versions are :func:`pedconv.convert` with
the conversion policy of the paper / the authors' code. Keyword arguments of a
``pedconv_*`` builder go to :func:`pedconv.convert`, so every layer option and policy
(``rank``, ``components``, ``kinds``, ``depth``, ...) is available, and the caller's
values win over the builder's defaults.
"""

from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn
import torchvision

from ..convert import convert
from ._registry import register_model
from .cifar_resnet import cifar_resnet

__all__: list[str] = []

# The authors' ResNets keep the stem and the downsample 1x1 convs static.
_RESNET_POLICY = {"keep_shortcut": True}
# EfficientNet's squeeze-excitation 1x1 convs act on 1x1 maps: they stay static.
_EFFICIENTNET_POLICY = {"exclude": ["*.se.*"]}


def _ped(model: nn.Module, policy: dict, kwargs: dict) -> nn.Module:
    return convert(model, inplace=True, **{**policy, **kwargs})


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
