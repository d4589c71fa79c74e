"""CIFAR-style ResNets: depths, widths, and conversion."""

import pytest
import torch

import pedconv
from pedconv.models import cifar_resnet


def test_cifar_resnet_depths_and_conversion():
    model = cifar_resnet(depth=20, width=16, in_chans=1)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 19 + 2
    converted = pedconv.convert(model, keep_shortcut=True)
    assert sum(isinstance(m, pedconv.PEDConv2d) for m in converted.modules()) == 18
    assert converted(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="depth"):
        cifar_resnet(depth=21)
