"""The training pipeline runs any Task: a toy task checks what every downstream task relies on."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn as nn
from torch import Tensor

from pedconv.training.checkpoint import load_training_checkpoint
from pedconv.training.data import DataSpec, TensorImageDataset, collate_batch
from pedconv.training.distributed import DistEnv
from pedconv.training.model_setup import ModelArgs
from pedconv.training.task import StepResult, Task, TrainStep
from pedconv.training.task_command import TaskCommand
from pedconv.training.train import train


class CountingStep:
    """Squared error of the mean pixel; counts its calls and backward passes (state that must survive a resume)."""

    def __init__(self) -> None:
        self.calls = 0
        self.backwards = 0
        self.batches: list[list[int]] = []

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], seed: int) -> StepResult:
        images, labels = batch
        self.calls += 1
        self.batches.append(labels.tolist())
        out = model(images.float().flatten(1) / 255)
        return StepResult(((out.squeeze(1) - labels.float()) ** 2).mean(), len(labels))

    def after_backward(self) -> None:
        self.backwards += 1

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "backwards": self.backwards}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls, self.backwards = state["calls"], state["backwards"]


class ToyTask(Task):
    name = "toy"
    default_model = "cifar_resnet20"  # validated against the registry; build_model below ignores it
    best_metric = "score"
    result_metrics = ("score", "mse")
    defaults: ClassVar[dict[str, Any]] = {"epochs": 2, "batch_size": 4, "lr": 0.05, "lr_scale": "none"}
    presets: ClassVar[dict[str, dict[str, Any]]] = {"quick": {"_help": "one epoch", "epochs": 1, "lr": 0.01}}

    def __init__(self, replay: int = 1) -> None:
        self.steps: list[CountingStep] = []
        self._replay = replay

    def replay(self, args: argparse.Namespace) -> int:
        return self._replay

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--items", type=int, default=16)

    def build_data(self, args: argparse.Namespace, need_train: bool = True) -> DataSpec:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 255, (args.items, 1, 2, 2), dtype=torch.uint8, generator=g)
        ds = TensorImageDataset(images, torch.arange(args.items) % 3)
        return DataSpec("toy", ds, ds, 3, 1, (2, 2), (0.0,), (1.0,), True, True, collate_batch)

    def build_model(self, args: argparse.Namespace, spec: DataSpec) -> tuple[nn.Module, ModelArgs]:
        return nn.Linear(4, 1), ModelArgs("cifar_resnet20", 3, {"width": 8}, 1, 1)

    def train_step(self, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs, env: DistEnv) -> TrainStep:
        self.steps.append(CountingStep())
        return self.steps[-1]

    def evaluate(self, module: nn.Module, loader: Any, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs,
                 env: DistEnv, final: bool = False) -> dict[str, float]:
        with torch.no_grad():
            errors = [((module(x.float().flatten(1) / 255).squeeze(1) - y.float()) ** 2).sum() for x, y in loader]
        mse = float(sum(errors)) / spec.num_val
        return {"score": -mse, "mse": mse, "final": float(final), "val_images": float(spec.num_val),
                "eval_images_per_s": 1.0}


def test_a_task_trains_on_the_shared_pipeline(tmp_path: Path) -> None:
    task = ToyTask()
    r = train({"output": str(tmp_path), "quiet": True}, task)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in records] == [1, 2]
    assert "train_top1" not in records[0]  # the step reports no correct predictions
    assert [rec["final"] for rec in records] == [0.0, 1.0]  # only the last evaluation is the final one
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["score"] == records[-1]["score"] and result["mse"] == records[-1]["mse"]
    assert result["best_metric"] == "score" and result["best_value"] == max(rec["score"] for rec in records)
    assert r["result"] == result
    step = task.steps[-1]
    assert step.calls == step.backwards == 2 * 4  # 16 items / batch 4, two epochs; after_backward each time
    ckpt = load_training_checkpoint(tmp_path / "last.pt")
    assert ckpt["rng"][0]["task"] == {"calls": 8, "backwards": 8}  # the step's state is saved...
    assert ckpt["best_metric"] == "score"


def test_a_resumed_task_run_restores_the_step_state(tmp_path: Path) -> None:
    train({"output": str(tmp_path), "quiet": True, "epochs": 1}, ToyTask())
    task = ToyTask()
    train({"output": str(tmp_path), "quiet": True, "epochs": 2, "resume": "auto"}, task)
    assert task.steps[-1].calls == 8  # ...and restored: 4 steps before the resume, 4 after


def test_replay_repeats_each_batch_with_a_step_each_time(tmp_path: Path) -> None:
    task = ToyTask(replay=3)
    train({"output": str(tmp_path), "quiet": True, "epochs": 1}, task)
    batches = task.steps[-1].batches
    assert len(batches) == 3 * 4
    assert all(batches[i] == batches[i - i % 3] for i in range(len(batches)))
    assert batches[0] != batches[3]
    assert load_training_checkpoint(tmp_path / "last.pt")["global_step"] == 12


def test_presets_lie_under_the_config_and_the_flags(tmp_path: Path) -> None:
    command = TaskCommand(ToyTask)
    parser = command.build_parser(argparse.ArgumentParser())
    args = parser.parse_args(["train", "--quick", "--output", str(tmp_path)])
    assert command.config_layer(args, parser) == {"epochs": 1, "lr": 0.01}
    assert parser.parse_args(["train", "--quick", "--epochs", "5"]).epochs == 5  # a flag wins over the preset
    assert parser.parse_args(["train", "--quick"]).lr == 0.01
    fresh = TaskCommand(ToyTask).build_parser(argparse.ArgumentParser())  # the CLI builds its parsers per call
    assert fresh.parse_args(["train"]).epochs == 2  # the task's own default


def test_a_preset_value_that_is_not_an_option_is_refused() -> None:
    class Broken(ToyTask):
        presets: ClassVar[dict[str, dict[str, Any]]] = {"quick": {"learning_rate": 1}}

    command = TaskCommand(Broken)
    parser = command.build_parser(argparse.ArgumentParser())
    from pedconv.errors import ConfigError

    with pytest.raises(ConfigError, match="--preset quick: unknown key 'learning_rate'"):
        command.config_layer(parser.parse_args(["train", "--quick"]), parser)
