"""Building a registered model for a dataset (classes, input channels), and the CIFAR-style ResNet it trains."""

import pytest
import torch

from pedconv.training.model_setup import ModelArgs, build_model


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


TASK_MODELS = {  # task model -> (classes, a backbone tensor, the ResNet-18 tensor it is)
    "ssd300_resnet18": (91, "backbone.body.4.0.conv1.weight", "layer1.0.conv1.weight"),
    "pedconv_ssd300_resnet18": (91, "backbone.body.5.1.bn2.weight", "layer2.1.bn2.weight"),
    "upernet_resnet18": (150, "encoder.conv1.weight", "conv1.weight"),
    "pedconv_upernet_resnet18": (150, "encoder.layer3.0.conv2.weight", "layer3.0.conv2.weight"),
    "pedconv_fasterrcnn_resnet18_fpn": (91, "backbone.body.layer4.1.conv1.weight", "layer4.1.conv1.weight"),
}


@pytest.mark.parametrize("task_model", sorted(TASK_MODELS))
def test_init_from_a_classification_run_loads_the_task_models_backbone(tmp_path, task_model, capsys) -> None:
    """The issue's reproduction: a ResNet-18 run (every weight 0.123) given to a detector or a
    segmenter used to leave it random without a word (their builders swallow static_weights).
    Now the backbone takes it (static into PEDConv as the base weights), reported in one line."""
    import pedconv
    from pedconv.training.model_setup import start_from_run

    resnet = pedconv.create_model("resnet18")
    with torch.no_grad():
        for p in resnet.parameters():
            p.fill_(0.123)
    _checkpoint_of(resnet, tmp_path / "last.pt")
    classes, target, source = TASK_MODELS[task_model]
    model = start_from_run(pedconv.create_model(task_model), ModelArgs(task_model, classes), str(tmp_path))
    loaded = model.state_dict()[target]
    assert torch.equal(loaded, resnet.state_dict()[source]) and float(loaded.flatten()[0]) == pytest.approx(0.123)
    line = capsys.readouterr().err
    assert "tensors loaded into" in line and "fc.bias, fc.weight" in line


def test_init_from_a_run_that_fits_nothing_is_an_error(tmp_path) -> None:
    import pedconv
    from pedconv.training.model_setup import start_from_run

    _checkpoint_of(pedconv.create_model("cifar_resnet20", width=3), tmp_path / "last.pt")
    with pytest.raises(ValueError, match="none of its weight tensors fit upernet_resnet18"):
        start_from_run(pedconv.create_model("upernet_resnet18"), ModelArgs("upernet_resnet18", 150), str(tmp_path))


def test_init_from_a_run_of_the_same_network_loads_it(tmp_path) -> None:
    import pedconv
    from pedconv.training.model_setup import start_from_run

    source = pedconv.create_model("cifar_resnet20", width=8)
    _checkpoint_of(source, tmp_path / "best.pt")
    started = start_from_run(pedconv.create_model("cifar_resnet20", width=8),
                             ModelArgs("cifar_resnet20", 10, {"width": 8}), str(tmp_path))
    torch.testing.assert_close(started.state_dict(), source.state_dict())
    converted = start_from_run(pedconv.create_model("pedconv_cifar_resnet20", width=8),
                               ModelArgs("pedconv_cifar_resnet20", 10, {"width": 8}), str(tmp_path))
    assert torch.equal(converted.conv1.weight, source.conv1.weight)


def test_init_from_a_torchvision_state_dict_file(tmp_path, capsys) -> None:
    """A torchvision (or timm) ResNet-18 state dict on disk into a PEDConv detector's backbone."""
    import torchvision

    import pedconv
    from pedconv.training.model_setup import start_from_run

    resnet = torchvision.models.resnet18()
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    name = "pedconv_fasterrcnn_resnet18_fpn"
    model = start_from_run(pedconv.create_model(name), ModelArgs(name, 91), str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.state_dict()["backbone.body.layer3.1.conv2.weight"], resnet.layer3[1].conv2.weight)
    assert "loaded into" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match=r"junk\.pth"):
        start_from_run(pedconv.create_model(name), ModelArgs(name, 91), str(tmp_path / "junk.pth"))
