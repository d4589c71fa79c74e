"""`pedconv eval`: a training checkpoint or a model + weights, the run's metrics again, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pedconv
import pedconv.cli
import pedconv.training.evaluate
from pedconv.training.checkpoint import load_training_checkpoint
from pedconv.training.evaluate import build_parser


@pytest.mark.usefixtures("fashion_mnist")
def test_eval_reproduces_the_run_metrics(tiny_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    best = Path(tiny_run["best_checkpoint"])
    js = tmp_path / "eval.json"
    rc = pedconv.cli.main(["eval", "--checkpoint", str(best), "--val-subset", "1000", "--json", str(js),
                           "--threads", "1"])
    assert rc == 0
    result = json.loads(js.read_text())
    # Same 1000 images (same subset seed), same eval-mode network: the run's best top-1, up to
    # batch-size-dependent rounding flipping at most a couple of predictions.
    assert result["top1"] == pytest.approx(tiny_run["best_top1"], abs=0.21)
    assert result["images"] == 1000 and result["data"] == "fashion_mnist"
    assert result["params"] > 50_000 and result["macs"] > 1_000_000 and result["eval_images_per_s"] > 0
    assert result["input_size"] == [1, 28, 28]
    assert "top-1" in capsys.readouterr().out
    # --model + --weights (a bare state dict) gives the same numbers.
    sd = tmp_path / "sd.pt"
    torch.save(load_training_checkpoint(best)["model"], sd)
    rc = pedconv.cli.main(["eval", "--model", "pedconv_cifar_resnet20", "--model-kwargs", "width=8", "--weights",
                           str(sd), "--val-subset", "1000", "--json", str(js), "--threads", "1", "--no-profile"])
    assert rc == 0 and json.loads(js.read_text())["top1"] == pytest.approx(result["top1"])


@pytest.mark.usefixtures("fashion_mnist")
def test_eval_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pedconv.training.evaluate.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    sd = tmp_path / "sd.pt"
    torch.save(pedconv.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=4).state_dict(), sd)
    assert pedconv.training.evaluate.main(["--model", "cifar_resnet20", "--weights", str(sd), "--val-subset", "8"]) == 1
    err = capsys.readouterr().err
    assert "do not fit the model" in err  # width 16 model, width 4 weights
    assert err.startswith("pedconv eval: error: ") and err.count("\n") == 1  # torch's many lines, as one
    assert pedconv.training.evaluate.main(["--model", "cifar_resnet20", "--weights", str(tmp_path / "nope.pt")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_authors_arch_flag_and_its_former_name() -> None:
    """``--authors-arch`` is the flag; ``--reference-arch`` still works but is not advertised."""
    assert build_parser().parse_args(["--authors-arch", "resnet18"]).authors_arch == "resnet18"
    assert build_parser().parse_args(["--reference-arch", "resnet50"]).authors_arch == "resnet50"
    assert build_parser().parse_args([]).authors_arch is None
    options = build_parser().format_help().split("\nmodel:\n")[1]  # the option list, after the description
    assert "--authors-arch" in options and "--reference-arch" not in options
    assert "--reference-arch" not in build_parser().format_usage()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--reference-arch", "resnet34"])
