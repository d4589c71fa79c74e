"""Run checkpoints: one schema written by CheckpointSaver, validated loading, RNG states, resume checks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from pedconv.errors import CheckpointError
from pedconv.tasks.classification import train
from pedconv.training.checkpoint import CHECKPOINT_FORMAT, CheckpointSaver, atomic_save, load_training_checkpoint
from pedconv.training.distributed import DistEnv
from pedconv.training.model_setup import ModelArgs
from pedconv.training.resume import restore_training_state
from pedconv.training.state import EpochSums, RunLayout, RunProgress, capture_rng_state, restore_rng_state


class _Unpicklable:
    def __reduce__(self) -> tuple:
        raise RuntimeError("disk full (simulated)")


def test_atomic_save_never_leaves_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="simulated"):
        atomic_save({"step": 2, "w": torch.zeros(3), "bad": _Unpicklable()}, path)
    assert torch.load(path)["step"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path: Path) -> None:
    import random

    import numpy as np

    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    atomic_save({"rng": state}, tmp_path / "s.pt")
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_saver_writes_the_schema_that_loading_restores(tmp_path: Path) -> None:
    """A checkpoint written by CheckpointSaver passes load_training_checkpoint and restores the run's state."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(2, 1, 2, 2)).sum().backward()
    opt.step()
    from timm.scheduler import CosineLRScheduler

    sched = CosineLRScheduler(opt, 8, t_in_epochs=False)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    saver = CheckpointSaver(tmp_path, net, opt, sched, scaler, layout=RunLayout(32, 4, 1, 128), seed=3,
                            config={"model": "toy", "lr": 0.1}, model_args=ModelArgs("toy", 2), data={"name": "x"},
                            env=DistEnv())
    progress = RunProgress(global_step=4)
    assert progress.add_epoch({"epoch": 1, "val_top1": 12.5})
    saver.save(progress, EpochSums(images=128.0), is_best=True)
    ckpt = load_training_checkpoint(tmp_path / "last.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()
    assert (ckpt["epoch"], ckpt["batches_done"], ckpt["global_step"], ckpt["best_epoch"]) == (1, 0, 4, 1)
    assert ckpt["sampler"] == {"seed": 3, "epoch": 1, "start_step": 0, "global_batch": 32, "num_samples": 128}
    assert ckpt["rng"][0]["sums"]["images"] == 128.0 and ckpt["model_args"]["name"] == "toy"
    fresh = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.5, momentum=0.9)
    restored = restore_training_state(ckpt, tmp_path / "last.pt", fresh, fresh_opt,
                                      CosineLRScheduler(fresh_opt, 8, t_in_epochs=False), scaler)
    assert restored == progress
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values()))
    assert fresh_opt.param_groups[0]["lr"] != 0.1  # this run's hyper-parameters, not the checkpoint's
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.usefixtures("fashion_mnist")
def test_resume_rejects_corrupt_foreign_and_mismatched_checkpoints(tiny_run: dict, tmp_path: Path,
                                                                    tiny: dict[str, Any]) -> None:
    src = Path(tiny_run["last_checkpoint"])
    quick = dict(tiny, epochs=3)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt is corrupt or truncated"):
        train(quick, output=str(run), resume="auto")
    torch.save({"state_dict": {}}, run / "last.pt")
    with pytest.raises(CheckpointError, match="not a pedconv training checkpoint"):
        train(quick, output=str(run), resume="auto")
    shutil.copy(src, run / "last.pt")
    with pytest.raises(CheckpointError, match=r"model_kwargs: checkpoint \{'width': 8\}, run \{'width': 16\}"):
        train(quick, output=str(run), resume="auto", model_kwargs={"width": 16})
    with pytest.raises(CheckpointError, match="global batch of 32"):
        train(quick, output=str(run), resume="auto", batch_size=64)
