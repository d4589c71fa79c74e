"""SIGTERM / SIGINT: the run finishes its step, saves last.pt, says how to resume, exits 143 / 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pedconv.tasks.classification import train
from pedconv.tasks.classification.command import parse_args
from pedconv.training.checkpoint import load_training_checkpoint
from pedconv.training.interruption import StopRequests

ARGS = ["--model", "pedconv_cifar_resnet20", "--model-kwargs", "width=4", "--epochs", "2", "--train-subset", "640",
        "--val-subset", "200", "--batch-size", "32", "--lr", "0.8", "--deterministic", "--threads", "1", "--seed", "5",
        "--log-every", "1"]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_training_checkpoint(path)["model"]


@pytest.mark.usefixtures("fashion_mnist")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_saves_its_step_and_resumes_bit_exactly(tmp_path: Path, subprocess_env, sig) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pedconv", "train", *ARGS, "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env)
    deadline = time.monotonic() + 180
    while not ((out / "log.txt").is_file() and "step 3/20" in (out / "log.txt").read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not get going in 180 s"
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    lines = [line for line in err.splitlines() if line.startswith("pedconv train:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"stopped by {signal.Signals(sig).name}" in lines[0]
    assert f"resume with: pedconv train --output {out} --resume auto" in lines[0]
    saved = load_training_checkpoint(out / "last.pt")
    assert 3 <= saved["global_step"] < 40  # saved at the step it was in, mid-run: no step lost

    resumed = train(parse_args(["--output", str(out), "--resume", "auto", "--quiet"]))
    reference = train(parse_args([*ARGS, "--quiet", "--output", str(tmp_path / "reference")]))
    a, b = _tensors(out / "last.pt"), _tensors(tmp_path / "reference" / "last.pt")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert [r["val_top1"] for r in resumed["history"]] == [r["val_top1"] for r in reference["history"]]


def test_stop_requests_catch_the_first_signal_and_a_second_ctrl_c_stops_at_once() -> None:
    # Compared with the handler installed before: a suite run from a background job or under
    # nohup starts with SIGINT ignored, not with Python's default handler.
    before = signal.getsignal(signal.SIGINT)
    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_number == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_stop_requests_restore_an_ignored_sigint() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequests():
            assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
