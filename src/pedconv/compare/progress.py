"""What a comparison shows while it runs: one bar (or one line per epoch) across all its runs."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional, TextIO

__all__ = ["METRICS", "CompareProgress", "duration", "read_records"]


# A run's epoch records, rewritten by `pedconv train` after every epoch.
METRICS = "metrics.jsonl"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The epoch records of a run's ``metrics.jsonl`` (written atomically by the run), [] if none."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError:
        return []


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 10 s``, ``1 h 05 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class CompareProgress:
    """What a comparison shows while it runs, across all its runs.

    On a terminal, one tqdm bar counts the epochs left to train (tqdm's ETA) and names the
    current run and its epoch; otherwise one plain line per trained epoch says the same,
    with the runs done and the time left. Each epoch is reported by the run itself, through
    :meth:`epoch_done` (``train(..., on_epoch=...)``).

    Args:
        runs: ``(label, run folder)`` of every run, in order.
        epochs: epochs per run.
        stream: the bar's stream (stderr); ``out``: where lines go (stdout).
        use_tqdm: None = a bar when ``stream`` is a terminal.
        metric: the metric each epoch's line shows (the task's ``best_metric``).

    >>> import io, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> p = CompareProgress([("cifar_resnet20 seed 0", folder)], epochs=2, out=sys.stdout, use_tqdm=False)
    >>> with p.watch(0):
    ...     p.epoch_done({"epoch": 1, "val_top1": 80.0})  # doctest: +ELLIPSIS
    compare: run 1/1 cifar_resnet20 seed 0: epoch 1/2, val top-1 80.00%; 0/1 runs done, about ... left
    """

    def __init__(self, runs: Sequence[tuple[str, Path]], epochs: int, stream: Optional[TextIO] = None,
                 out: Optional[TextIO] = None, use_tqdm: Optional[bool] = None, metric: str = "val_top1") -> None:
        self.runs, self.epochs, self.metric = list(runs), epochs, metric
        self.stream, self.out = stream or sys.stderr, out or sys.stdout
        self.todo = sum(0 if (folder / "result.json").is_file()
                        else max(0, epochs - len(read_records(folder / METRICS)))
                        for _, folder in self.runs)  # epochs to train now
        self.trained, self.finished, self.current = 0, 0, -1
        self.started = time.monotonic()
        self.bar: Any = None
        if getattr(self.stream, "isatty", lambda: False)() if use_tqdm is None else use_tqdm:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.todo, unit="epoch", desc="compare", file=self.stream, dynamic_ncols=True)

    @contextlib.contextmanager
    def watch(self, index: int) -> Iterator[None]:
        """While run ``index`` trains: its epochs arrive through :meth:`epoch_done` (the
        ``on_epoch`` callback of :func:`pedconv.training.train.train`)."""
        label, folder = self.runs[index]
        self.current = index
        if self.bar is not None:
            done = len(read_records(folder / METRICS))  # an interrupted run's epochs so far
            self.bar.set_description_str(f"run {index + 1}/{len(self.runs)} {label}: epoch {done}/{self.epochs}")
        yield

    def epoch_done(self, record: dict[str, Any], index: Optional[int] = None) -> None:
        """Run ``index`` (default: the current one) finished an epoch (``record`` is its
        ``metrics.jsonl`` line); runs side by side (``--jobs``) name theirs."""
        self.trained += 1
        run = self.current if index is None else index
        text = f"run {run + 1}/{len(self.runs)} {self.runs[run][0]}: epoch {record.get('epoch')}/{self.epochs}"
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=False)
            self.bar.update(1)
            self.bar.refresh()  # an epoch is rare: show it now, not at tqdm's next redraw
            return
        value = record.get(self.metric)
        name = "val top-1" if self.metric == "val_top1" else self.metric
        print(f"compare: {text}" + (f", {name} {value:.2f}" + ("%" if self.metric == "val_top1" else "")
                                    if isinstance(value, (int, float)) else "")
              + f"; {self.finished}/{len(self.runs)} runs done, {self.time_left()}", file=self.out, flush=True)

    def time_left(self) -> str:
        """The time left at the pace of the epochs trained so far."""
        if self.trained >= self.todo:
            return "all epochs trained"
        if not self.trained:
            return "time left unknown"
        per_epoch = (time.monotonic() - self.started) / self.trained
        return f"about {duration(per_epoch * (self.todo - self.trained))} left"

    def where(self) -> str:
        """Where the comparison is, for a message: ``in run 3/8 (NAME seed 0)``."""
        if self.current >= 0 and self.finished <= self.current:
            return f"in run {self.current + 1}/{len(self.runs)} ({self.runs[self.current][0]})"
        return f"after {self.finished} of {len(self.runs)} runs"

    def run_done(self, message: str) -> None:
        """A run finished (or was found finished): count it and show ``message``."""
        self.finished += 1
        if self.bar is not None:
            self.bar.write(message, file=self.out)
        else:
            print(message, file=self.out, flush=True)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
