"""Registered detectors: SSD300 (Table 2) and Faster R-CNN + FPN on (PEDConv-)ResNets.

The PEDConv paper (Hou & Kung, BMVC 2021, Sec. 4.2, Table 2) puts PEDConv-ResNet-50 into
SSD300 on COCO. The detectors are torchvision's (``SSD`` with its default ``SSDHead`` and a
``DefaultBoxGenerator``; ``FasterRCNN`` with a ResNet-FPN backbone); this module adds only
the SSD ResNet feature extractor (:class:`SSDResNetFeatures`) and the conversion policy.

Conventions (torchvision's): a detector takes a list of float ``[3, H, W]`` images in
``[0, 1]`` (a 4-D batch works too) and normalises them itself with the ImageNet mean/std;
in training it also takes the targets (``boxes`` xyxy in pixels, ``labels`` int64) and
returns a dict of losses, in eval it returns one ``{"boxes", "scores", "labels"}`` per image.
``num_classes`` includes the background (class 0): COCO is 91 with torchvision's category ids,
81 with contiguous ids. Keyword arguments of a ``pedconv_*`` builder that are
:func:`pedconv.convert` options (policy or layer options) go there; the others go to the
torchvision detector (``score_thresh``, ``detections_per_img``, ...).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Optional

import torch
import torch.nn as nn
import torchvision
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ..convert import convert, split_convert_options
from ..method import PEDConv2d  # noqa: F401  (the doctests use it)
from ._registry import check_builder_options, register_model

# torchvision's SSD and FasterRCNN pass their **kwargs on to the image transform, which reads this too
_TRANSFORM_EXTRA = ("_skip_resize",)

__all__ = ["SSDResNetFeatures"]

# The detectors' transform normalises [0, 1] images with ImageNet's statistics (timm's constants,
# the one definition the project uses: the tasks give the same to their data specs).
IMAGENET_MEAN, IMAGENET_STD = list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)

# The authors' ResNets keep the stem and the downsample 1x1 convs static (as models.zoo).
_RESNET_POLICY = {"keep_shortcut": True}
# SSD300's default boxes (Liu et al.): 4 or 6 per location on the six maps.
_SSD_ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
_SSD_EXTRA_CHANNELS = (512, 512, 256, 256, 256)
_SSD_EXTRA_MIDDLE = (256, 256, 128, 128, 128)


class SSDResNetFeatures(nn.Module):
    """The six SSD feature maps from a torchvision ResNet (the common SSD-ResNet design).

    The ResNet runs up to ``layer3`` with ``layer3``'s stride set to 1, so the first map is at
    stride 8 (38x38 for a 300 px image, 1024 channels for ResNet-50, 256 for ResNet-18);
    ``layer4`` and the classifier are dropped. Five extra blocks (1x1 conv to 256/256/128/128/128
    channels, then a 3x3 conv to 512/512/256/256/256, each followed by BatchNorm and ReLU) give
    the 19, 10, 5, 3, 1 maps: the first three 3x3 convs have stride 2, the last two stride 1 and
    no padding. On images smaller than 300 px a map can become smaller than 3; from there the
    last blocks pad by 1 and keep the size, so that any ``image_size`` >= 64 works.

    Args:
        resnet: a torchvision ResNet (its ``layer4`` and ``fc`` are not used).
        image_size: the square input side the detector resizes to (fixes the extras' padding).

    Example:
        >>> feats = SSDResNetFeatures(torchvision.models.resnet18(), image_size=300).eval()
        >>> [tuple(f.shape[1:]) for f in feats(torch.zeros(1, 3, 300, 300)).values()]  # doctest: +NORMALIZE_WHITESPACE
        [(256, 38, 38), (512, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]
    """

    def __init__(self, resnet: torchvision.models.ResNet, image_size: int = 300) -> None:
        super().__init__()
        for m in resnet.layer3[0].modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
        self.body = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                  resnet.layer1, resnet.layer2, resnet.layer3)
        first = resnet.layer3[-1].bn3.num_features if hasattr(resnet.layer3[-1], "bn3") else \
            resnet.layer3[-1].bn2.num_features
        side = image_size
        for _ in range(3):  # stem conv, max-pool and layer2 each halve (rounding up)
            side = math.ceil(side / 2)
        blocks, channels = [], [first, *_SSD_EXTRA_CHANNELS]
        for i, (mid, out) in enumerate(zip(_SSD_EXTRA_MIDDLE, _SSD_EXTRA_CHANNELS)):
            if i < 3:
                stride, padding = 2, 1
            else:
                stride, padding = 1, (0 if side >= 3 else 1)
            side = (side + 2 * padding - 3) // stride + 1
            blocks.append(nn.Sequential(
                nn.Conv2d(channels[i], mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, out, 3, stride=stride, padding=padding, bias=False), nn.BatchNorm2d(out),
                nn.ReLU(inplace=True)))
        self.extras = nn.ModuleList(blocks)
        self.out_channels = channels  # read by torchvision's SSD to build its head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The six maps, highest resolution first, as torchvision's SSD expects."""
        x = self.body(x)
        out = OrderedDict([("0", x)])
        for i, block in enumerate(self.extras):
            x = block(x)
            out[str(i + 1)] = x
        return out


def _ssd(arch: str, num_classes: int, image_size: int, kwargs: dict[str, Any]) -> SSD:
    check_builder_options(kwargs, SSD.__init__, GeneralizedRCNNTransform.__init__, extra=_TRANSFORM_EXTRA,
                          builder=f"ssd300_{arch}")
    features = SSDResNetFeatures(getattr(torchvision.models, arch)(), image_size)
    anchors = DefaultBoxGenerator(_SSD_ASPECT_RATIOS)
    return SSD(features, anchors, (image_size, image_size), num_classes,
               image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, **kwargs)


def _pedconv_ssd(arch: str, num_classes: int, image_size: int, kwargs: dict[str, Any]) -> SSD:
    # The feature extractor (ResNet and extra blocks) but its stem and downsample shortcuts;
    # the SSD head stays static. This reproduces Table 2's 24.4M exactly (81 classes); the
    # ResNet alone gives 24.1M, the head converted too 24.9M.
    options, rest = split_convert_options(kwargs)
    model = _ssd(arch, num_classes, image_size, rest)
    convert(model.backbone, inplace=True, **{**_RESNET_POLICY, **options})
    return model


@register_model
def ssd300_resnet50(*, num_classes: int = 91, image_size: int = 300, **kwargs: Any) -> nn.Module:
    """SSD300 on ResNet-50 (static baseline, Table 2).

    Args:
        num_classes: classes including the background (class 0).
        image_size: the square side images are resized to (300 in the paper; e.g. 128 for CPU runs).
        **kwargs: passed to torchvision's ``SSD`` (``score_thresh``, ``detections_per_img``, ...).

    Example:
        >>> model = ssd300_resnet50(num_classes=81, image_size=128).eval()
        >>> sorted(model([torch.rand(3, 100, 140)])[0])
        ['boxes', 'labels', 'scores']
    """
    return _ssd("resnet50", num_classes, image_size, kwargs)


@register_model
def pedconv_ssd300_resnet50(*, num_classes: int = 91, image_size: int = 300, **kwargs: Any) -> nn.Module:
    """SSD300 on PEDConv-ResNet-50 (Table 2): every conv of the feature extractor (ResNet and
    extra blocks) but the stem and the shortcuts is a PEDConv2d; the SSD head stays static.
    That reproduces Table 2's 24.4M (81 classes); the ResNet alone gives 24.1M, converting the
    head too 24.9M.

    Args:
        num_classes: classes including the background (class 0).
        image_size: the square side images are resized to.
        **kwargs: :func:`pedconv.convert` options (``rank``, ``components``, ``include``, ...);
            anything else goes to torchvision's ``SSD``.

    Example:
        >>> model = pedconv_ssd300_resnet50(num_classes=3, image_size=128, rank=2)
        >>> sum(isinstance(m, PEDConv2d) for m in model.modules())  # 39 in layer1-3, 10 in the extras
        49
    """
    return _pedconv_ssd("resnet50", num_classes, image_size, kwargs)


@register_model
def ssd300_resnet18(*, num_classes: int = 91, image_size: int = 300, **kwargs: Any) -> nn.Module:
    """SSD300 on ResNet-18 (small, for CPU runs); arguments as :func:`ssd300_resnet50`.

    Example:
        >>> model = ssd300_resnet18(num_classes=3, image_size=128).eval()
        >>> out = model(torch.rand(2, 3, 128, 128))  # a 4-D batch works as well as a list
        >>> len(out), out[0]["boxes"].shape[1]
        (2, 4)
    """
    return _ssd("resnet18", num_classes, image_size, kwargs)


@register_model
def pedconv_ssd300_resnet18(*, num_classes: int = 91, image_size: int = 300, **kwargs: Any) -> nn.Module:
    """SSD300 on PEDConv-ResNet-18 (small, for CPU runs); arguments as :func:`pedconv_ssd300_resnet50`.

    Example:
        >>> model = pedconv_ssd300_resnet18(num_classes=3, image_size=128)
        >>> any(isinstance(m, PEDConv2d) for m in model.backbone.extras.modules())
        True
    """
    return _pedconv_ssd("resnet18", num_classes, image_size, kwargs)


# ------------------------------------------------------------------------ Faster R-CNN
def _fasterrcnn(arch: str, num_classes: int, kwargs: dict[str, Any], pedconv: bool,
                image_size: Optional[int] = None) -> FasterRCNN:
    # No pretrained weights: all five stages trainable and plain BatchNorm (torchvision freezes
    # BatchNorm only for pretrained backbones).
    options, rest = split_convert_options(kwargs) if pedconv else ({}, kwargs)
    if image_size is not None:  # the name every detection builder shares: here, the shorter side
        rest.setdefault("min_size", image_size)
    check_builder_options(rest, FasterRCNN.__init__, GeneralizedRCNNTransform.__init__, extra=_TRANSFORM_EXTRA,
                          builder=f"fasterrcnn_{arch}_fpn")
    backbone = resnet_fpn_backbone(backbone_name=arch, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5)
    if pedconv:
        # The ResNet body only (stem and shortcuts static); FPN, RPN and box head stay static.
        convert(backbone.body, inplace=True, **{**_RESNET_POLICY, **options})
    return FasterRCNN(backbone, num_classes, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, **rest)


@register_model
def fasterrcnn_resnet50_fpn(*, num_classes: int = 91, image_size: Optional[int] = None, **kwargs: Any
                           ) -> nn.Module:
    """Faster R-CNN + FPN on ResNet-50 (torchvision's architecture, no pretrained weights).

    Args:
        num_classes: classes including the background (class 0).
        image_size: the shorter side images are resized to (torchvision's ``min_size``; the name
            every detection builder shares, ``pedconv detect --img-size``); default 800.
        **kwargs: passed to torchvision's ``FasterRCNN`` (``min_size``, ``max_size``, ...).

    Example:
        >>> model = fasterrcnn_resnet50_fpn(num_classes=3, min_size=128, max_size=128)
        >>> sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(p.numel() for p in model.parameters())
        True
    """
    return _fasterrcnn("resnet50", num_classes, kwargs, pedconv=False, image_size=image_size)


@register_model
def pedconv_fasterrcnn_resnet50_fpn(*, num_classes: int = 91, image_size: Optional[int] = None, **kwargs: Any
                                   ) -> nn.Module:
    """Faster R-CNN + FPN on PEDConv-ResNet-50: the ResNet body converted (stem and shortcuts
    static), FPN and heads static.

    Args:
        num_classes: classes including the background (class 0).
        **kwargs: :func:`pedconv.convert` options; anything else goes to ``FasterRCNN``.

    Example:
        >>> model = pedconv_fasterrcnn_resnet50_fpn(num_classes=3, min_size=128, max_size=128)
        >>> sum(isinstance(m, PEDConv2d) for m in model.backbone.body.modules())
        48
    """
    return _fasterrcnn("resnet50", num_classes, kwargs, pedconv=True, image_size=image_size)


@register_model
def fasterrcnn_resnet18_fpn(*, num_classes: int = 91, image_size: Optional[int] = None, **kwargs: Any
                           ) -> nn.Module:
    """Faster R-CNN + FPN on ResNet-18 (small, for CPU runs); arguments as :func:`fasterrcnn_resnet50_fpn`.

    Example:
        >>> model = fasterrcnn_resnet18_fpn(num_classes=3, min_size=64, max_size=64).eval()
        >>> sorted(model([torch.rand(3, 64, 64)])[0])
        ['boxes', 'labels', 'scores']
    """
    return _fasterrcnn("resnet18", num_classes, kwargs, pedconv=False, image_size=image_size)


@register_model
def pedconv_fasterrcnn_resnet18_fpn(*, num_classes: int = 91, image_size: Optional[int] = None, **kwargs: Any
                                   ) -> nn.Module:
    """Faster R-CNN + FPN on PEDConv-ResNet-18 (small, for CPU runs); as :func:`pedconv_fasterrcnn_resnet50_fpn`.

    Example:
        >>> model = pedconv_fasterrcnn_resnet18_fpn(num_classes=3, min_size=96, max_size=96, rank=2)
        >>> {m.rank for m in model.modules() if isinstance(m, PEDConv2d)}
        {2}
    """
    return _fasterrcnn("resnet18", num_classes, kwargs, pedconv=True, image_size=image_size)
