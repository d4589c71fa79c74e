"""The published parameters and FLOPs of the registered models, beside their builders.

``PAPER_NUMBERS[name]`` holds ``params``, ``macs`` (multiply-adds at 224x224, batch 1, unless
the row gives its ``input_size``: 300 for SSD300, 512 for the ADE20K segmenters) and the
``source`` table; a row's ``num_classes`` (default 1000) is what the model is built with
(81 for the paper's SSD: COCO's 80 classes and the background; 150 for ADE20K). "Table n" is
the PEDConv paper; the ODConv rows are from the ODConv paper (Li et al., ICLR 2022), params
only. ``pedconv profile`` sets its measurements beside these, and the tests hold every
classification row to 2% / 3%; the Table 2/3 rows' gaps (segmentation heads) are in the docs ("Models and their size").
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["PAPER_NUMBERS", "Published"]


class Published(TypedDict, total=False):
    """One model's published numbers: ``params``, ``macs`` (optional) and the ``source``; for
    models not measured at 224x224 with 1000 classes, the ``input_size`` (square side) and the
    ``num_classes`` they were measured with."""

    params: float
    macs: float
    top1: float
    source: str
    input_size: int
    num_classes: int


PAPER_NUMBERS: dict[str, Published] = {
    "resnet18": {"params": 11.7e6, "macs": 1.81e9, "top1": 70.4, "source": "Table 1b"},
    "pedconv_resnet18": {"params": 11.9e6, "macs": 1.83e9, "top1": 74.2, "source": "Table 1b"},
    "resnet50": {"params": 25.6e6, "macs": 4.1e9, "top1": 76.2, "source": "Table 1b"},
    "pedconv_resnet50": {"params": 28.6e6, "macs": 4.2e9, "top1": 80.5, "source": "Table 1b"},
    "resnet101": {"params": 44.6e6, "macs": 7.8e9, "source": "Table 6"},
    "mobilenetv1_100": {"params": 4.2e6, "macs": 569e6, "top1": 71.9, "source": "Table 1a"},
    "pedconv_mobilenetv1_100": {"params": 5.1e6, "macs": 579e6, "top1": 75.9, "source": "Table 1a"},
    "mobilenet_v2": {"params": 3.5e6, "macs": 300e6, "top1": 72.0, "source": "Table 1a"},
    "pedconv_mobilenet_v2": {"params": 4.8e6, "macs": 307e6, "top1": 75.5, "source": "Table 1a"},
    "efficientnet_b0": {"params": 5.3e6, "macs": 391e6, "top1": 77.1, "source": "Table 1a"},
    "pedconv_efficientnet_b0": {"params": 7.2e6, "macs": 400e6, "top1": 78.2, "source": "Table 1a"},
    "pedconv_resnet18_rank4": {"params": 12.4e6, "macs": 1.9e9, "source": "Table 5b"},
    "pedconv_resnet18_rank8": {"params": 13.0e6, "macs": 2.0e9, "source": "Table 5b"},
    "pedconv_resnet50_gamma": {"params": 27.9e6, "macs": 4.1e9, "source": "Table 5a"},
    "pedconv_resnet50_phi": {"params": 27.4e6, "macs": 4.1e9, "source": "Table 5a"},
    "pedconv_resnet50_psi": {"params": 26.7e6, "macs": 4.1e9, "source": "Table 5a"},
    "pedconv_resnet50_deterministic": {"params": 28.6e6, "macs": 4.2e9, "source": "Table 5a"},
    "pedconv_mobilenetv1_100_pw": {"params": 4.8e6, "macs": 579e6, "source": "Table 5c"},
    "pedconv_mobilenetv1_100_dw": {"params": 4.6e6, "macs": 569e6, "source": "Table 5c"},
    "pedconv_mobilenetv1_100_shallow": {"params": 4.3e6, "macs": 570e6, "source": "Table 5d"},
    "pedconv_mobilenetv1_100_deep": {"params": 5.1e6, "macs": 578e6, "source": "Table 5d"},
    "pedconv_resnet50_sd": {"params": 17.2e6, "macs": 2.3e9, "source": "Table 6"},
    "pedconv_resnet101_sd": {"params": 29.3e6, "macs": 4.1e9, "source": "Table 6"},
    "condconv_resnet50": {"params": 104.8e6, "macs": 4.2e9, "top1": 78.6, "source": "Table 1b (CondConv, K=8)"},
    "condconv_mobilenet_v2": {"params": 27.5e6, "macs": 329e6, "top1": 74.6, "source": "Table 1a (CondConv, K=8)"},
    "dyconv_resnet18": {"params": 42.7e6, "macs": 1.85e9, "top1": 72.7, "source": "Table 1b (DY-Conv, K=4)"},
    "dyconv_mobilenet_v2": {"params": 11.1e6, "macs": 313e6, "top1": 75.2, "source": "Table 1a (DY-Conv, K=4)"},
    "odconv_resnet18": {"params": 11.94e6, "source": "ODConv paper (1 kernel)"},
    "odconv4x_resnet18": {"params": 44.90e6, "source": "ODConv paper (4 kernels)"},
    "odconv_resnet50": {"params": 28.64e6, "source": "ODConv paper (1 kernel)"},
    "odconv4x_resnet50": {"params": 90.67e6, "source": "ODConv paper (4 kernels)"},
    # DCD (Li et al., ICLR 2021) as listed in the PEDConv paper's Table 1.
    "dcd_resnet18": {"params": 14.0e6, "macs": 1.83e9, "top1": 73.1, "source": "Table 1b (DCD)"},
    "dcd_resnet50": {"params": 30.7e6, "macs": 4.2e9, "top1": 77.9, "source": "Table 1b (DCD)"},
    "dcd_mobilenet_v2": {"params": 5.5e6, "macs": 326e6, "top1": 75.2, "source": "Table 1a (DCD)"},
    # WeightNet (Ma et al., ECCV 2020) as listed in the PEDConv paper's Table 1.
    "weightnet_resnet50": {"params": 31.1e6, "macs": 4.2e9, "top1": 77.5, "source": "Table 1b (WeightNet)"},
    # KernelWarehouse rows
    "kw_resnet18": {"params": 11.93e6, "source": "KernelWarehouse paper (KW 1x)"},
    "kw_resnet50": {"params": 28.05e6, "source": "KernelWarehouse paper (KW 1x)"},
    # SK rows (timm's SK-ResNeXt-50 32x4d is the 27.5M "SK-ResNet-50")
    "skresnext50_32x4d": {"params": 27.5e6, "macs": 4.5e9, "top1": 79.2, "source": "Table 1b (SK)"},
    "ssd300_resnet50": {"params": 22.9e6, "macs": 20.2e9, "source": "Table 2", "input_size": 300, "num_classes": 81},
    "pedconv_ssd300_resnet50": {"params": 24.4e6, "macs": 20.3e9, "source": "Table 2", "input_size": 300,
                                "num_classes": 81},
    "upernet_resnet50": {"params": 64.1e6, "macs": 156.2e9, "source": "Table 3", "input_size": 512,
                         "num_classes": 150},
    "pedconv_upernet_resnet50": {"params": 72.3e6, "macs": 156.3e9, "source": "Table 3", "input_size": 512,
                                 "num_classes": 150},
    "pspnet_resnet50": {"params": 51.5e6, "macs": 186.8e9, "source": "Table 3", "input_size": 512,
                        "num_classes": 150},
    "pedconv_pspnet_resnet50": {"params": 59.7e6, "macs": 186.9e9, "source": "Table 3", "input_size": 512,
                                "num_classes": 150},
}
"""Published numbers by registered model name (see the module docstring)."""
