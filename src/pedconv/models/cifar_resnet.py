"""CIFAR-style ResNets (He et al. 2016, Sec. 4.2) for 28-32 px images.

Written here because neither torchvision nor timm ships this family: a 3x3 stride-1 stem,
no max-pool, three stages of ``n`` basic blocks at widths ``w, 2w, 4w`` (depth ``6n + 2``).
Shortcuts that change shape use a 1x1 convolution and BatchNorm under ``downsample``, the
same naming as torchvision, so :func:`pedconv.convert` policies apply unchanged.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor
from torchvision.models.resnet import BasicBlock

__all__ = ["CifarResNet", "cifar_resnet"]


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images, built from torchvision's ``BasicBlock``.

    Args:
        depth: ``6n + 2`` (20, 32, 44, 56, 110, ...).
        width: channels of the first stage (16 in the original paper).
        in_chans: input channels (1 for Fashion-MNIST, 3 for CIFAR).
        num_classes: classifier outputs.

    Example:
        >>> import torch
        >>> CifarResNet(depth=8, width=8, in_chans=1)(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, depth: int = 20, width: int = 16, in_chans: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 56, ...), got {depth}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                downsample = None
                if stride != 1 or cin != cout:
                    downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                blocks.append(BasicBlock(cin, cout, stride=stride, downsample=downsample))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def cifar_resnet(depth: int = 20, width: int = 16, in_chans: int = 3, num_classes: int = 10) -> CifarResNet:
    """Build a :class:`CifarResNet`."""
    return CifarResNet(depth=depth, width=width, in_chans=in_chans, num_classes=num_classes)
