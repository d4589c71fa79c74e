"""The run folder: one writer at a time, and `--resume auto` never loses a run's results."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import pedconv.cli
from pedconv.errors import CheckpointError, FolderBusyError, TrainError
from pedconv.tasks.classification import train
from pedconv.utils.lock import LOCK_NAME, FolderLock

SMALL: dict[str, Any] = dict(model="cifar_resnet20", model_kwargs={"width": 4}, epochs=1, train_subset=128,
                             val_subset=64, batch_size=32, threads=1, quiet=True)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
            and p.name != LOCK_NAME}


def _hold_lock_in_a_child(folder: Path, env: dict[str, str]) -> subprocess.Popen:
    code = ("import sys, time; from pedconv.utils.lock import FolderLock\n"
            "with FolderLock(sys.argv[1], 'pedconv train'):\n    print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.usefixtures("fashion_mnist")
def test_a_second_writer_is_refused_with_one_line_naming_the_holder(tmp_path: Path, capsys, subprocess_env) -> None:
    out = tmp_path / "run"
    holder = _hold_lock_in_a_child(out, subprocess_env)
    try:
        for extra in ([], ["--resume", "auto"]):
            code = pedconv.cli.main(["train", "--model", "cifar_resnet20", "--model-kwargs", "width=4", "--epochs", "1",
                                     "--train-subset", "128", "--val-subset", "64", "--output", str(out), *extra])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 1 and len(err) == 1, err
            assert f"in use by another pedconv train: pid {holder.pid}" in err[0] and "Traceback" not in err[0]
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the refused runs wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # A killed holder leaves no stale lock: the folder is free at once.
    result = train(dict(SMALL, output=str(out)))
    assert result["final"]["epoch"] == 1


def test_the_lock_is_released_when_the_block_ends_and_refused_while_held(tmp_path: Path) -> None:
    busy = pytest.raises(FolderBusyError, match=rf"in use by another pedconv train: pid {os.getpid()}")
    with FolderLock(tmp_path, "pedconv train"), busy:
        FolderLock(tmp_path, "pedconv train").__enter__()
    with FolderLock(tmp_path, "pedconv train"):
        pass


@pytest.mark.usefixtures("fashion_mnist")
def test_resume_auto_without_last_pt_refuses_and_changes_nothing(tmp_path: Path) -> None:
    """The reported data-loss path: a finished run whose last.pt is gone, then ``--resume auto``."""
    out = tmp_path / "run"
    train(dict(SMALL, output=str(out), model_kwargs={"width": 8}))
    (out / "last.pt").unlink()
    before = _digest(out)
    with pytest.raises(TrainError, match=rf"no last\.pt.*best\.pt can continue.*--resume {out / 'best.pt'}"):
        train({"output": str(out), "resume": "auto", "quiet": True, "threads": 1})
    assert _digest(out) == before  # best.pt, metrics.jsonl, log.txt, args.yaml untouched
    # best.pt does continue it, with the folder's own options (width 8, not the default 16).
    result = train({"output": str(out), "resume": str(out / "best.pt"), "epochs": 2, "quiet": True, "threads": 1})
    assert result["model_args"]["kwargs"]["width"] == 8 and [r["epoch"] for r in result["history"]] == [1, 2]


@pytest.mark.usefixtures("fashion_mnist")
def test_resume_auto_with_a_corrupt_last_pt_points_at_best_pt(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(dict(SMALL, output=str(out)))
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])
    before = _digest(out)
    with pytest.raises(CheckpointError, match=r"last\.pt.*best\.pt can continue the run"):
        train({"output": str(out), "resume": "auto", "quiet": True, "threads": 1})
    assert _digest(out) == before


@pytest.mark.usefixtures("fashion_mnist")
def test_leftovers_of_a_run_that_crashed_before_its_first_checkpoint_do_not_block_the_rerun(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "args.yaml").write_text("model: cifar_resnet20\n")
    (out / "log.txt").write_text("started, then the machine went down\n")
    result = train(dict(SMALL, output=str(out)))  # the identical rerun: no --resume, no --overwrite
    assert result["final"]["epoch"] == 1 and "went down" not in (out / "log.txt").read_text()
    # Results do block a fresh run.
    with pytest.raises(TrainError, match=r"holds a run's results.*--resume auto.*--overwrite"):
        train(dict(SMALL, output=str(out)))


@pytest.mark.usefixtures("fashion_mnist")
def test_run_files_get_the_users_umask_like_any_other_file(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        train(dict(SMALL, output=str(tmp_path / "run")))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir() if p.name != LOCK_NAME}
    assert set(modes) >= {"last.pt", "best.pt", "metrics.jsonl", "curves.png", "args.yaml", "log.txt"}
    assert set(modes.values()) == {0o640}, modes
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
