"""What a run shows: plain progress lines, a tqdm bar on a terminal, quiet mode."""

from __future__ import annotations

import io

from pedconv.training.run_log import Reporter


def test_progress_plain_lines_and_bar() -> None:
    plain = io.StringIO()
    r = Reporter(stream=plain, log_every=5, use_tqdm=False)
    r.start_epoch(0, 2, 12, 0)
    for step in range(12):
        r.step(step, lambda: {"loss": 0.5})
    r.end_epoch({"epoch": 1, "train_loss": 0.5, "val_top1": 80.0}, ("val_top1",))
    lines = plain.getvalue().splitlines()
    assert lines == ["epoch 1/2 step 5/12  loss 0.5", "epoch 1/2 step 10/12  loss 0.5",
                     "epoch 1/2 step 12/12  loss 0.5", "epoch 1/2  train_loss 0.5  val_top1 80"]
    bar = io.StringIO()
    r = Reporter(stream=bar, use_tqdm=True)
    r.start_epoch(0, 1, 10, 0)
    for step in range(10):
        r.step(step, lambda: {"loss": 0.5})
    r.end_epoch({"epoch": 1, "train_loss": 0.5})
    assert "epoch 1/1:   0%|" in bar.getvalue() and bar.getvalue().endswith("epoch 1/1  train_loss 0.5\n")
    quiet = io.StringIO()
    r = Reporter(stream=quiet, quiet=True)
    r.info("hidden")
    r.warn("shown")
    assert quiet.getvalue() == "warning: shown\n"
