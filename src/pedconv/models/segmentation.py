"""Registered segmenters: UperNet and dilated PSPNet on (PEDConv-)ResNets (Table 3).

The PEDConv paper (Hou & Kung, BMVC 2021, Sec. 4.3, Table 3) puts PEDConv-ResNet-50 into
UperNet and into PSPNet with a dilated ResNet-50 (output stride 8) on ADE20K (150 classes,
512x512 crops). The architectures are segmentation_models_pytorch's ``UPerNet`` and
``PSPNet`` (imported inside the builders, so ``import pedconv`` stays light), set up as the
mmsegmentation models the paper used:

* UperNet with 512 decoder channels (smp's default is 256; mmseg's ``channels=512``), which
  gives Table 3's 64.1M parameters (the ResNet-18 versions, for CPU runs, use 128);
* PSPNet on all five ResNet stages dilated to output stride 8 (smp's default uses only three
  stages, undilated), and the bottleneck after the pyramid pooling a 3x3 conv as in PSPNet and
  mmseg (smp's is 1x1).

The PEDConv versions convert every conv but the stem and the downsample shortcuts, decoder
included (the paper's "all standard convolution layers except the first layer"): that
reproduces Table 3's +8.2M, where converting the encoder only adds +3.0M (the docs, "Models and their size").

Input: a normalised float ``[B, 3, H, W]`` batch (ImageNet mean/std), ``H`` and ``W`` multiples
of 32 (UperNet) or 8 (PSPNet); output: logits ``[B, num_classes, H, W]``.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..convert import convert, split_convert_options
from ._registry import check_builder_options, register_model

__all__: list[str] = []

# The authors' ResNets keep the stem and the downsample 1x1 convs static (as models.zoo).
_RESNET_POLICY = {"keep_shortcut": True}


# Decoder width: mmseg's 512 for ResNet-50 (Table 3); 128 for the ResNet-18 CPU-sized models.
_WIDTH = {"resnet50": 512, "resnet18": 128}


# smp's models pass their **kwargs on to the encoder, which reads this
_ENCODER_EXTRA = ("output_stride",)


def _upernet(encoder: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    import segmentation_models_pytorch as smp

    check_builder_options(kwargs, smp.UPerNet.__init__, extra=_ENCODER_EXTRA, builder=f"upernet_{encoder}")
    return smp.UPerNet(encoder_name=encoder, encoder_weights=None, classes=num_classes,
                       **{"decoder_channels": _WIDTH[encoder], **kwargs})


def _pspnet(encoder: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    import segmentation_models_pytorch as smp

    check_builder_options(kwargs, smp.PSPNet.__init__, extra=_ENCODER_EXTRA, builder=f"pspnet_{encoder}")
    model = smp.PSPNet(encoder_name=encoder, encoder_weights=None, classes=num_classes,
                       **{"encoder_depth": 5, "output_stride": 8, "upsampling": 8,
                          "psp_out_channels": _WIDTH[encoder], **kwargs})
    old = model.decoder.conv[0]  # smp's 1x1 bottleneck -> the 3x3 of PSPNet / mmseg
    new = nn.Conv2d(old.in_channels, old.out_channels, 3, padding=1, bias=old.bias is not None)
    nn.init.kaiming_uniform_(new.weight, mode="fan_in", nonlinearity="relu")  # smp's decoder init
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    model.decoder.conv[0] = new
    return model


def _ped(model_fn: Any, encoder: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    options, rest = split_convert_options(kwargs)
    return convert(model_fn(encoder, num_classes, rest), inplace=True, **{**_RESNET_POLICY, **options})


@register_model
def upernet_resnet50(*, num_classes: int = 150, **kwargs: Any) -> nn.Module:
    """UperNet on ResNet-50 (static baseline, Table 3), smp with 512 decoder channels.

    Args:
        num_classes: output classes (150 for ADE20K; no background class).
        **kwargs: passed to ``smp.UPerNet`` (``decoder_channels``, ...).

    Example:
        >>> import torch
        >>> upernet_resnet50(num_classes=5).eval()(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 5, 64, 64])
    """
    return _upernet("resnet50", num_classes, kwargs)


@register_model
def pedconv_upernet_resnet50(*, num_classes: int = 150, **kwargs: Any) -> nn.Module:
    """UperNet on PEDConv-ResNet-50 (Table 3): every conv but the stem and the shortcuts, decoder included.

    Args:
        num_classes: output classes.
        **kwargs: :func:`pedconv.convert` options (``rank``, ``include``, ...); the rest go to ``smp.UPerNet``.

    Example:
        >>> from pedconv import PEDConv2d
        >>> model = pedconv_upernet_resnet50(num_classes=5, rank=2)
        >>> {m.rank for m in model.modules() if isinstance(m, PEDConv2d)}
        {2}
    """
    return _ped(_upernet, "resnet50", num_classes, kwargs)


@register_model
def pspnet_resnet50(*, num_classes: int = 150, **kwargs: Any) -> nn.Module:
    """PSPNet on a dilated ResNet-50 (output stride 8; static baseline, Table 3).

    Args:
        num_classes: output classes (150 for ADE20K; no background class).
        **kwargs: passed to ``smp.PSPNet`` (``psp_out_channels``, ``psp_dropout``, ...).

    Example:
        >>> model = pspnet_resnet50(num_classes=5)
        >>> model.encoder.output_stride, model.encoder.layer4[0].conv2.dilation
        (8, (4, 4))
    """
    return _pspnet("resnet50", num_classes, kwargs)


@register_model
def pedconv_pspnet_resnet50(*, num_classes: int = 150, **kwargs: Any) -> nn.Module:
    """PSPNet on a dilated PEDConv-ResNet-50 (Table 3): every conv but the stem and the
    shortcuts, decoder included.

    Args:
        num_classes: output classes.
        **kwargs: :func:`pedconv.convert` options; the rest go to ``smp.PSPNet``.

    Example:
        >>> from pedconv import PEDConv2d
        >>> isinstance(pedconv_pspnet_resnet50(num_classes=5).decoder.conv[0], PEDConv2d)
        True
    """
    return _ped(_pspnet, "resnet50", num_classes, kwargs)


@register_model
def upernet_resnet18(*, num_classes: int = 150, **kwargs: Any) -> nn.Module:
    """UperNet on ResNet-18 with 128 decoder channels (small, for CPU runs); arguments as
    :func:`upernet_resnet50`.

    Example:
        >>> import torch
        >>> upernet_resnet18(num_classes=4)(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 4, 32, 32])
    """
    return _upernet("resnet18", num_classes, kwargs)


@register_model
def pedconv_upernet_resnet18(*, num_classes: int = 150, **kwargs: Any) -> nn.Module:
    """UperNet on PEDConv-ResNet-18 (small, for CPU runs); arguments as :func:`pedconv_upernet_resnet50`.

    Example:
        >>> import torch
        >>> model = pedconv_upernet_resnet18(num_classes=4).eval()
        >>> model(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 4, 32, 32])
    """
    return _ped(_upernet, "resnet18", num_classes, kwargs)


@register_model
def pspnet_resnet18(*, num_classes: int = 150, **kwargs: Any) -> nn.Module:
    """PSPNet on a dilated ResNet-18 (output stride 8) with a 128-channel head (small, for CPU runs).

    Example:
        >>> import torch
        >>> pspnet_resnet18(num_classes=4).eval()(torch.randn(1, 3, 48, 48)).shape
        torch.Size([1, 4, 48, 48])
    """
    return _pspnet("resnet18", num_classes, kwargs)


@register_model
def pedconv_pspnet_resnet18(*, num_classes: int = 150, **kwargs: Any) -> nn.Module:
    """PSPNet on a dilated PEDConv-ResNet-18 (small, for CPU runs).

    Example:
        >>> import torch
        >>> pedconv_pspnet_resnet18(num_classes=4).eval()(torch.randn(1, 3, 48, 48)).shape
        torch.Size([1, 4, 48, 48])
    """
    return _ped(_pspnet, "resnet18", num_classes, kwargs)
