"""pedconv's classifiers in timm's registry: create_model, list_models, pretrained_cfg, timm's
training utilities, the released weights through pretrained=True, and name clashes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import timm.data
import timm.optim
import torch
from test_weights import _release  # an authors'-layout file of the released network (this folder is on sys.path)

import pedconv
import pedconv.timm as pt

SRC = Path(__file__).resolve().parents[2] / "src"


ORDERS = ["import pedconv, timm", "import timm, pedconv",
          "import pedconv.baselines, timm"]  # the last: timm first imported inside pedconv's own imports


@pytest.mark.integration
def test_import_pedconv_and_timm_in_any_order_then_timm_creates_the_model(tmp_path):
    """Fresh interpreters, one per import order, run side by side."""
    procs = {}
    for order in ORDERS:
        code = (f"{order}, torch; m = timm.create_model('pedconv_resnet18', num_classes=10); "
                "print(tuple(m.eval()(torch.randn(2, 3, 64, 64)).shape), type(m.layer1[0].conv1).__name__)")
        procs[order] = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(SRC)))
    for order, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (order, err)
        assert out.split() == ["(2,", "10)", "PEDConv2d"], order


def test_every_classifier_that_is_not_timms_is_registered_with_a_pretrained_cfg():
    names = pt.registered()
    assert set(names) == set(pt._candidates()) == set(pt.TIMM_MODELS) and len(names) == len(set(names))
    assert {"pedconv_resnet18", "pedconv_resnet50", "pedconv_mobilenet_v2", "cifar_resnet20",
            "condconv_resnet50", "dyconv_resnet18", "odconv_resnet18", "dcd_resnet50"} <= set(names)
    assert set(timm.list_models("pedconv_*")) == {n for n in names if n.startswith("pedconv_")}
    assert not set(names) & pt.LEFT_TO_TIMM and "pedconv_ssd300_resnet50" not in names  # task models stay out
    for name in pt.LEFT_TO_TIMM:  # the same architectures under timm's names: timm's own
        assert timm.models.model_entrypoint(name).__module__.startswith("timm.")
    cfg = timm.models.get_pretrained_cfg("pedconv_resnet18")
    assert "PEDConvResNet18_Weights.AUTHORS_IMAGENET" in cfg.notes[0] and cfg.classifier == "fc"
    assert timm.models.get_pretrained_cfg("cifar_resnet20").input_size == (3, 32, 32)


def test_timms_training_utilities_work_on_a_pedconv_model():
    model = timm.create_model("pedconv_resnet18", num_classes=10)
    assert type(model.layer1[0].conv1) is pedconv.PEDConv2d and model.fc.out_features == 10
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 224, 224) and config["mean"] == (0.485, 0.456, 0.406)
    transform = timm.data.create_transform(**config)
    assert transform is not None
    optimizer = timm.optim.create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    loss = torch.nn.functional.cross_entropy(model.train()(x), y)
    loss.backward()
    optimizer.step()
    # timm's no-weight-decay split sees the generators' biases and the norms like any other
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[0]["weight_decay"] == 0.0
    small = timm.create_model("cifar_resnet20", num_classes=10, width=8)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_pretrained_true_reads_the_released_file_from_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PEDCONV_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"download them from https://drive\.google\.com/"):
        timm.create_model("pedconv_resnet18", pretrained=True)
    path, ref = _release(tmp_path)
    monkeypatch.setenv("PEDCONV_WEIGHTS", str(path.parent))
    model = timm.create_model("pedconv_resnet18", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-4)
    assert timm.create_model("pedconv_resnet18", pretrained=True, num_classes=5).fc.out_features == 5
    with pytest.raises(ValueError, match="no released weights for pedconv_resnet50"):
        timm.create_model("pedconv_resnet50", pretrained=True)


def test_a_name_timm_has_for_another_model_is_an_error_naming_it(monkeypatch):
    from timm.models._registry import _model_entrypoints

    def someone_elses():  # a timm model of the same name
        raise AssertionError

    monkeypatch.setitem(_model_entrypoints, "dyconv_resnet18", someone_elses)
    monkeypatch.setattr(pt, "_registered", [n for n in pt.registered() if n != "dyconv_resnet18"])
    with pytest.raises(pt.TimmNameClash, match="pedconv models named like timm's own: dyconv_resnet18 "):
        pt.register_with_timm(["pedconv_resnet18", "dyconv_resnet18"])
    assert pt.register_with_timm(["pedconv_resnet18"]) == pt.registered()  # registered already: nothing to do


def test_the_keywords_timms_train_script_passes_are_taken_and_a_real_one_is_refused():
    """timm's train.py calls create_model with in_chans, drop_rate, drop_path_rate... always."""
    script = dict(pretrained=False, in_chans=3, num_classes=10, drop_rate=0.0, drop_path_rate=None,
                  drop_block_rate=None, global_pool=None, bn_momentum=None, bn_eps=None, scriptable=None,
                  checkpoint_path=None)
    assert timm.create_model("pedconv_resnet18", **script).fc.out_features == 10
    assert timm.create_model("cifar_resnet20", **dict(script, in_chans=1)).conv1.in_channels == 1  # its own option
    with pytest.raises(ValueError, match=r"pedconv_resnet18: timm's drop_rate=0.2 has no counterpart"):
        timm.create_model("pedconv_resnet18", **dict(script, drop_rate=0.2))
