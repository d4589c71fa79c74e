"""`pedconv detect|segment|adv train|eval`: the commands end to end on tiny offline sets, and their errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pedconv.cli import main

# A tiny offline scene set (64 px canvases) in the test's own cache folder.
SCENES = ["--offline-scenes", "32", "--val-scenes", "16", "--scene-size", "64"]


def _json_out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], status: int) -> str:
    capsys.readouterr()
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_the_task_commands_are_listed_and_documented(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(word in out for word in ("detect", "segment", "adv"))
    for task in ("detect", "segment", "adv"):
        for action in ("train", "eval"):
            assert main([task, action, "--help"]) == 0
            assert "--output" in capsys.readouterr().out or action == "eval"


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--eps: 8 exceeds 1" in _error(capsys, ["adv", "train", "--eps", "8"], 2).replace("'", "")
    assert "give either --checkpoint PATH or --model NAME" in _error(capsys, ["detect", "eval"], 2)
    assert "invalid choice: 'trian'" in _error(capsys, ["segment", "trian"], 2)
    assert "argument --preset: invalid choice: 'nope'" in _error(capsys, ["detect", "train", "--preset", "nope"], 2)
    assert "did you mean '--eps'" in _error(capsys, ["adv", "train", "--epss", "0.1"], 2)


def test_a_malformed_coco_set_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "train2017").mkdir()
    ann = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    ann.write_text(json.dumps({"images": [], "annotations": []}))
    err = _error(capsys, ["detect", "train", "--data-dir", str(tmp_path / "coco"), "--output", str(tmp_path / "r"),
                          "--model", "ssd300_resnet18"], 1)
    assert "instances_val2017.json" in err or str(ann) in err, err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_a_mask_with_a_foreign_value_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    root = tmp_path / "ade"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / split / "a.jpg")
        Image.fromarray(np.full((8, 8), 3 if split == "training" else 1, np.uint8)).save(
            root / "annotations" / split / "a.png")
    err = _error(capsys, ["segment", "train", "--data-dir", str(root), "--num-classes", "2", "--output",
                          str(tmp_path / "r"), "--model", "upernet_resnet18"], 1)
    assert "a.png" in err and "3" in err, err


def test_segment_trains_and_eval_reproduces_the_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # (That training beats an untrained model is the slow test below: it takes minutes.)
    cache = ["--offline-dir", str(tmp_path / "cache"), *SCENES, "--img-size", "64"]
    out = tmp_path / "seg"
    assert main(["segment", "train", "--quick", *cache, "--model", "upernet_resnet18", "--epochs", "4",
                 "--batch-size", "8", "--lr", "3e-3", "--output", str(out), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert {"args.yaml", "metrics.jsonl", "curves.png", "last.pt", "best.pt"} <= {p.name for p in out.iterdir()}
    again = _json_out(capsys, ["segment", "eval", "--checkpoint", str(out / "last.pt"), "--json"])
    assert again["mIoU"] == pytest.approx(result["mIoU"], abs=1e-6)  # the data options come from the checkpoint


def test_detect_trains_resumes_and_evaluates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = ["--offline-dir", str(tmp_path / "cache"), *SCENES, "--img-size", "64"]
    out = tmp_path / "det"
    common = ["detect", "train", "--quick", *cache, "--model", "ssd300_resnet18", "--batch-size", "8",
              "--output", str(out), "--quiet"]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume", "auto"]) == 0  # continues the run: one more epoch
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    result = json.loads((out / "result.json").read_text())
    assert {"AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR100"} <= set(result)
    again = _json_out(capsys, ["detect", "eval", "--checkpoint", str(out / "last.pt"), "--json"])
    assert again["AP"] == pytest.approx(result["AP"], abs=1e-6) and again["images"] == 16
    # the one evaluation path of every task: size and FLOPs at the task's input size; the model's
    # weights as a state dict file (under "state_dict", timm's loader) give the same AP
    assert again["input_size"] == [3, 64, 64] and again["params"] > 1e6 and again["macs"] > 1e6
    weights = tmp_path / "sd.pt"
    torch.save({"state_dict": torch.load(out / "last.pt", weights_only=False)["model"]}, weights)
    table = tmp_path / "eval.json"
    assert main(["detect", "eval", "--quick", *cache, "--model", "ssd300_resnet18", "--weights", str(weights),
                 "--json", str(table)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("model    ssd300_resnet18") and f"metrics  AP {again['AP']:.2f}" in printed
    assert json.loads(table.read_text())["AP"] == pytest.approx(again["AP"], abs=1e-6)


def test_adv_eval_takes_a_pedconv_train_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plain"
    assert main(["train", "--model", "cifar_resnet20", "--model-kwargs", "width=4", "--epochs", "1",
                 "--train-subset", "512", "--val-subset", "64", "--batch-size", "64", "--output", str(out),
                 "--quiet"]) == 0
    r = _json_out(capsys, ["adv", "eval", "--checkpoint", str(out / "last.pt"), "--attack-subset", "32",
                           "--pgd-steps", "3", "--eps", "8/255", "--json"])
    assert set(r) >= {"natural", "pgd3"} and r["images"] == 32 and r["pgd3"] <= r["natural"]


@pytest.mark.slow
@pytest.mark.parametrize("task, metric", [("detect", "AP50"), ("segment", "mIoU"), ("adv", "pgd10")])
def test_quick_presets_beat_an_untrained_model(task: str, metric: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The README's `pedconv <task> train --quick` (a few minutes each on 2 cores) against the
    same network untrained, on the same validation data (`eval --quick`)."""
    cache = ["--offline-dir", str(tmp_path / "cache")] if task != "adv" else []
    out = tmp_path / task
    assert main([task, "train", "--quick", *cache, "--output", str(out), "--quiet"]) == 0
    trained = json.loads((out / "result.json").read_text())
    untrained = _json_out(capsys, [task, "eval", "--quick", "--model", trained["model"], *cache, "--json"])
    assert untrained["images"] == json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["val_images"]
    # Margins (metric points) from the runs in the README: from scratch, minutes of CPU. The PEDConv
    # SSD barely starts in the quick budget (README: AP50 0.76 where the static SSD reaches 8.8;
    # first run of this test, 2026-12-05: 0.22 trained against 0.08 untrained), so its margin is
    # what it reliably clears, not the static model's.
    margin = {"detect": 0.1, "segment": 3.0, "adv": 20.0}[task]
    assert trained[metric] > untrained[metric] + margin, (untrained, trained)


def test_the_paper_preset_names_the_pretrained_start_it_expects(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`segment train --preset paper` without --init-from says that it trains from scratch while
    the recipe starts from an ImageNet-pretrained ResNet-50; with a torchvision file it loads it."""
    import torch
    import torchvision

    tiny = ["segment", "train", "--preset", "paper", "--model", "upernet_resnet18", "--model-kwargs",
            "decoder_channels=16", "--offline-dir", str(tmp_path / "cache"), *SCENES, "--img-size", "64",
            "--epochs", "1", "--batch-size", "4", "--val-subset", "4"]
    assert main([*tiny, "--output", str(tmp_path / "scratch")]) == 0
    assert "note: no --init-from: training from scratch" in capsys.readouterr().out + (
        tmp_path / "scratch" / "log.txt").read_text()
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    assert main([*tiny, "--init-from", str(tmp_path / "resnet18.pth"), "--output", str(tmp_path / "pretrained")]) == 0
    out = capsys.readouterr()
    log = (tmp_path / "pretrained" / "log.txt").read_text()
    assert "tensors loaded into upernet_resnet18's backbone" in out.out + out.err
    assert "tensors loaded into upernet_resnet18's backbone" in log  # the run's log says what it started from
    assert "note: no --init-from" not in out.out + log
