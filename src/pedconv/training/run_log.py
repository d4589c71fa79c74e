"""What a run shows and leaves behind: progress, ``log.txt``, ``metrics.jsonl``, ``curves.png``.

Only the main process reports. On a terminal (``sys.stderr.isatty()``) the steps of an
epoch show as a tqdm bar (loss, top-1, images/s); otherwise one plain line is printed every
``log_every`` steps and one per epoch, which reads well in a log file or a CI job.
Messages also go to ``<output>/log.txt``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from ..utils.atomic import atomic_write_text
from ..utils.reporting import json_ready, pyplot, save_figure

__all__ = ["Reporter", "plot_curves", "write_metrics"]

# The training averages of every record that are not a step metric (StepResult.metrics).
_NOT_STEP_METRICS = frozenset({"train_loss", "train_images", "train_images_per_s"})


def write_metrics(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Rewrite ``metrics.jsonl`` (one JSON object per epoch) from the run's history, atomically.

    Rewriting from the checkpointed history (instead of appending) keeps the file exactly in
    step with ``last.pt`` after an interruption. A metric that could not be computed (nan:
    e.g. AP_L of a set without large objects) is written as ``null``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> write_metrics([{"epoch": 1, "val_top1": 50.0}], p); p.read_text()
    '{"epoch": 1, "val_top1": 50.0}\\n'
    """
    atomic_write_text(path, "".join(json.dumps(json_ready(r)) + "\n" for r in history))


def plot_curves(history: Sequence[Mapping[str, Any]], path: Path, title: str = "",
                metrics: Sequence[str] = ()) -> bool:
    """Loss, the task's ``metrics`` (``val_top1``, ``AP``, ``mIoU``...; a ``val_X`` with its
    training counterpart ``train_X`` when the records have one) and the learning rate against
    epoch as one PNG, written atomically; False without matplotlib.

    >>> import tempfile, pathlib
    >>> h = [dict(epoch=e, train_loss=1.0 / e, val_loss=1.1 / e, train_top1=50 + e, val_top1=48 + e, lr=0.1 / e)
    ...      for e in (1, 2)]
    >>> plot_curves(h, pathlib.Path(tempfile.mkdtemp()) / "curves.png", metrics=("val_top1",))
    True
    """
    plt = pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [(axes[0], "loss", [("train", "train_loss", "-"), ("val", "val_loss", "--")])]
    lines = []
    for m in metrics:
        lines.append((m, m, "--" if m.startswith("val_") else "-"))
        if m.startswith("val_"):
            lines.append((f"train_{m[4:]}", f"train_{m[4:]}", "-"))
    panels.append((axes[1], "metrics (%)", lines))
    for ax, ylabel, lines in panels:
        for label, key, style in lines:
            values = [r.get(key) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [float("nan") if v is None else v for v in values], style, marker="o", ms=3,
                        label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].plot(epochs, [r.get("lr") for r in history], marker="o", ms=3)
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate (end of epoch)")
    axes[2].grid(alpha=0.3)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return True


class Reporter:
    """Progress and messages of the main process.

    Args:
        enabled: False on non-main ranks (then everything is a no-op).
        quiet: only warnings and errors.
        log_every: plain-mode step line period.
        log_file: also append every message here.
        stream: where to print (stderr by default; tqdm uses it too).
        use_tqdm: None = a bar when ``stream`` is a terminal.

    >>> r = Reporter(stream=sys.stdout, use_tqdm=False)
    >>> r.info("hello")
    hello
    """

    def __init__(self, enabled: bool = True, quiet: bool = False, log_every: int = 50,
                 log_file: Optional[Path] = None, stream: Optional[TextIO] = None,
                 use_tqdm: Optional[bool] = None) -> None:
        self.enabled, self.quiet, self.log_every = enabled, quiet, max(1, log_every)
        self.stream = stream or sys.stderr
        self.log_file = log_file
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.use_tqdm = (isatty if use_tqdm is None else use_tqdm) and not quiet
        self._bar: Any = None
        self._t0 = 0.0

    def _emit(self, msg: str, force: bool = False) -> None:
        if not self.enabled:
            return
        if self.log_file is not None:
            with open(self.log_file, "a") as f:
                f.write(msg + "\n")
        if self.quiet and not force:
            return
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def info(self, msg: str) -> None:
        """A normal message (hidden by ``quiet``, still written to ``log.txt``)."""
        self._emit(msg)

    def warn(self, msg: str) -> None:
        """A warning: shown even when quiet."""
        self._emit(f"warning: {msg}", force=True)

    def start_epoch(self, epoch: int, epochs: int, total_steps: int, first_step: int) -> None:
        """Open the epoch's bar (terminal) or note the start time (plain mode)."""
        self._epoch, self._epochs, self._total = epoch, epochs, total_steps
        self._t0 = time.perf_counter()
        if self.enabled and self.use_tqdm:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=first_step, desc=f"epoch {epoch + 1}/{epochs}",
                             file=self.stream, dynamic_ncols=True, leave=False)

    def step(self, step: int, values: Callable[[], Mapping[str, float]]) -> None:
        """After optimizer step ``step`` (0-based in the epoch): update the bar or print a line.

        ``values()`` (running loss, top-1, ...) is called only when something is displayed.
        """
        if not self.enabled:
            return
        last = step + 1 == self._total
        if self._bar is not None:
            self._bar.update(1)
            if (step + 1) % min(10, self.log_every) == 0 or last:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in values().items()}, refresh=False)
        elif not self.quiet and ((step + 1) % self.log_every == 0 or last):
            text = "  ".join(f"{k} {v:.4g}" for k, v in values().items())
            self._emit(f"epoch {self._epoch + 1}/{self._epochs} step {step + 1}/{self._total}  {text}")

    def end_epoch(self, record: Mapping[str, Any], metrics: Sequence[str] = ()) -> None:
        """Close the bar and print the epoch summary: the training averages (the step's own
        ``train_*`` metrics among them), the task's ``metrics``, the lr and the speed."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        step_metrics = sorted(k for k in record if k.startswith("train_") and k not in _NOT_STEP_METRICS)
        keys = ("train_loss", "infomax", *step_metrics, *metrics, "lr", "train_images_per_s", "epoch_time_s")
        parts = [f"{k} {record[k]:.4g}" for k in keys if isinstance(record.get(k), (int, float))]
        self._emit(f"epoch {record['epoch']}/{self._epochs}  " + "  ".join(parts))
