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


def _checkpoint_of(model: torch.nn.Module, path) -> None:
    """A `pedconv train` checkpoint holding ``model``'s weights (the other entries minimal)."""
    from pedconv.training.checkpoint import _REQUIRED, CHECKPOINT_FORMAT

    ckpt = {k: {} for k in _REQUIRED}
    ckpt.update(format=CHECKPOINT_FORMAT, model=model.state_dict(), epoch=0, batches_done=0, global_step=0,
                history=[])
    torch.save(ckpt, path)


@pytest.mark.parametrize("task_model", ["pedconv_ssd300_resnet18", "pedconv_upernet_resnet18"])
def test_init_from_a_run_that_reaches_no_weight_of_a_task_model_is_an_error(tmp_path, task_model) -> None:
    """The issue's reproduction: a ResNet-18 run (every weight 0.123) given to a detector or a
    segmenter used to leave it random without a word (their builders swallow static_weights)."""
    import pedconv
    from pedconv.training.model import start_from_run

    resnet = pedconv.create_model("resnet18")
    with torch.no_grad():
        for p in resnet.parameters():
            p.fill_(0.123)
    _checkpoint_of(resnet, tmp_path / "last.pt")
    model = pedconv.create_model(task_model)
    with pytest.raises(ValueError, match=r"none of its \d+ weight tensors reached"):
        start_from_run(model, ModelArgs(task_model, 91 if "ssd" in task_model else 150), str(tmp_path))


def test_init_from_a_run_of_the_same_network_loads_it(tmp_path) -> None:
    import pedconv
    from pedconv.training.model import start_from_run

    source = pedconv.create_model("cifar_resnet20", width=8)
    _checkpoint_of(source, tmp_path / "best.pt")
    started = start_from_run(pedconv.create_model("cifar_resnet20", width=8),
                             ModelArgs("cifar_resnet20", 10, {"width": 8}), str(tmp_path))
    torch.testing.assert_close(started.state_dict(), source.state_dict())
    converted = start_from_run(pedconv.create_model("pedconv_cifar_resnet20", width=8),
                               ModelArgs("pedconv_cifar_resnet20", 10, {"width": 8}), str(tmp_path))
    assert torch.equal(converted.conv1.weight, source.conv1.weight)
