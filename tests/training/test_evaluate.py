"""`pedconv eval`: a training checkpoint or a model + weights, the run's metrics again, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pedconv
import pedconv.cli
from pedconv.tasks.classification.evaluate import build_parser
from pedconv.tasks.classification.evaluate import main as evaluate_main
from pedconv.tools.flops import count_parameters, parameter_summary, profile_model
from pedconv.training.checkpoint import load_training_checkpoint


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
    assert result["top1"] == pytest.approx(tiny_run["best_value"], abs=0.21)
    assert result["images"] == 1000 and result["data"] == "fashion_mnist"
    assert result["params"] > 50_000 and result["macs"] > 1_000_000 and result["eval_images_per_s"] > 0
    assert result["input_size"] == [1, 28, 28]
    out = capsys.readouterr().out
    assert f"metrics  top1 {result['top1']:.2f}  top5 " in out and f"wrote {js}" in out
    # One parameter count everywhere (decoders apart): eval's line, the run's start line, the profiler's.
    model = pedconv.create_model("pedconv_cifar_resnet20", num_classes=10, in_chans=1, width=8)
    params, decoder = count_parameters(model)
    assert params == result["params"] == profile_model(model, (1, 1, 28, 28)).params and decoder > 0
    summary = parameter_summary(params, decoder)
    assert f"params   {summary}   MACs" in out
    assert f"pedconv_cifar_resnet20: {summary}, fashion_mnist" in (Path(tiny_run["output_dir"]) / "log.txt").read_text()
    # --model + --weights (a bare state dict) gives the same numbers.
    sd = tmp_path / "sd.pt"
    torch.save(load_training_checkpoint(best)["model"], sd)
    rc = pedconv.cli.main(["eval", "--model", "pedconv_cifar_resnet20", "--model-kwargs", "width=8", "--weights",
                           str(sd), "--val-subset", "1000", "--json", str(js), "--threads", "1", "--no-profile"])
    assert rc == 0 and json.loads(js.read_text())["top1"] == pytest.approx(result["top1"])


@pytest.mark.usefixtures("fashion_mnist")
def test_eval_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert evaluate_main(["--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    sd = tmp_path / "sd.pt"
    torch.save(pedconv.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=4).state_dict(), sd)
    assert evaluate_main(["--model", "cifar_resnet20", "--weights", str(sd), "--val-subset", "8"]) == 1
    err = capsys.readouterr().err
    assert "do not fit the model" in err  # width 16 model, width 4 weights
    assert err.startswith("pedconv eval: error: ") and err.count("\n") == 1  # torch's many lines, as one
    assert evaluate_main(["--model", "cifar_resnet20", "--weights", str(tmp_path / "nope.pt")]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, status, message", [
    (["--data", "imagefolder"], 2, "--data imagefolder needs --data-dir DIR"),
    (["--device", "tpu"], 2, "--device tpu: not a device"),
    (["--batch-size", "0"], 2, "argument --batch-size: must be >= 1, got 0"),
    (["--json", "/sys/pedconv-test/eval.json"], 1, "--json /sys/pedconv-test: cannot write in /sys"),
])
def test_eval_refuses_bad_options_before_loading(capsys: pytest.CaptureFixture, argv: list, status: int,
                                                 message: str) -> None:
    assert pedconv.cli.main(["eval", "--model", "cifar_resnet20", *argv]) == status
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pedconv eval: error: ") and message in lines[0], lines
    assert lines[0].endswith("(see pedconv eval --help)") == (status == 2)


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
