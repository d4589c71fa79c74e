"""Each task under DDP (torchrun, 2 CPU processes, gloo): the metrics a 2-process run reports at
its end (each rank scores its shard of the validation split; the detection metric gathers the
detections, the segmentation confusion matrix is all-reduced, PGD runs per rank) are the metrics
one process measures on the same data with the same weights (`<task> eval`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pedconv.cli import main

SCENES = ["--offline-scenes", "32", "--val-scenes", "15", "--scene-size", "64", "--img-size", "64"]  # 15: uneven
ATTACK = ["--attack-subset", "63", "--pgd-steps", "3"]
TASKS: dict[str, tuple[list[str], list[str], tuple[str, ...]]] = {  # train options, eval options, metrics
    "detect": (["--model", "ssd300_resnet18", *SCENES, "--batch-size", "4"], [], ("AP", "AP50", "AR100")),
    "segment": (["--model", "upernet_resnet18", "--model-kwargs", "decoder_channels=16", *SCENES,
                 "--batch-size", "4"], [], ("mIoU", "aAcc", "mAcc")),
    "adv": (["--model", "cifar_resnet20", "--model-kwargs", "width=4", "--train-subset", "256", "--val-subset", "63",
             *ATTACK, "--batch-size", "32"], ATTACK, ("natural", "pgd3")),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_two_processes_report_the_metrics_of_one(task: str, tmp_path: Path, subprocess_env: dict[str, str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    options, eval_options, metrics = TASKS[task]
    offline = ["--offline-dir", str(tmp_path / "cache")] if task != "adv" else []
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pedconv",
           task, "train", "--quick", *options, *offline, "--epochs", "1", "--threads", "1", "--output", str(out),
           "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    capsys.readouterr()
    assert main([task, "eval", "--checkpoint", str(out / "last.pt"), *eval_options, "--json", "--threads", "1"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["images"] == result.get("val_images", single["images"])
    assert any(result[metric] > 0 for metric in metrics), result  # something to agree on
    for metric in metrics:
        assert single[metric] == pytest.approx(result[metric], abs=1e-4), metric


@pytest.mark.slow
def test_the_transfer_protocol_runs_end_to_end(tmp_path: Path) -> None:
    """The transfer study's two steps on tiny data: `pedconv compare --preset transfer-pretrain`
    (ResNet-18 classifiers, static and PEDConv), then `pedconv compare --task segment --init-from
    ... --init-models ...` (UperNet-ResNet-18s, each from its own pretrained backbone, seed by
    seed), whose table gives the per-seed difference."""
    pretrain, seg = tmp_path / "pretrain", tmp_path / "seg"
    assert main(["compare", "--preset", "transfer-pretrain", "--seeds", "0", "--epochs", "1", "--train-subset", "256",
                 "--val-subset", "128", "--output", str(pretrain), "--", "--img-size", "32"]) == 0
    assert {p.name for p in (pretrain / "runs").iterdir()} == {"resnet18", "pedconv_resnet18"}
    assert main(["compare", "--task", "segment", "--seeds", "0", "--epochs", "1", "--init-from", str(pretrain),
                 "--init-models", "resnet18", "pedconv_resnet18", "--output", str(seg), "--", "--offline-scenes",
                 "32", "--val-scenes", "8", "--offline-dir", str(tmp_path / "cache")]) == 0
    for model, backbone in (("upernet_resnet18", "resnet18"), ("pedconv_upernet_resnet18", "pedconv_resnet18")):
        args = (seg / "runs" / model / "seed0" / "args.yaml").read_text()
        assert f"init_from: {pretrain / 'runs' / backbone / 'seed0'}" in args
    table = (seg / "compare.md").read_text()
    assert "Δ mIoU vs first row, per seed" in table and "aAcc mean ± std" in table
