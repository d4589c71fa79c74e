"""Building a registered model for a dataset (classes, input channels), and the CIFAR-style ResNet it trains."""

import pytest
import torch

from pedconv.training.model import ModelArgs, build_model


def test_build_model_passes_the_dataset_channels_where_the_builder_takes_them() -> None:
    model, margs = build_model("cifar_resnet20", 10, 1, {"width": 4})
    assert margs == ModelArgs("cifar_resnet20", 10, {"width": 4, "in_chans": 1}, 1, 1)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert build_model("resnet18", 7, 1)[1].input_chans == 3  # torchvision: the batch is replicated to 3 channels
    with pytest.raises(ValueError, match="rejected its options"):
        build_model("cifar_resnet20", 10, 1, {"bogus": 1})
