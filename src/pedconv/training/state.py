"""What a run carries from step to step besides the model: RNG states, progress, running sums.

All of it is checkpointed (:mod:`.checkpoint` writes it, :mod:`.resume` puts it back), and
none of it knows about models, tasks or files.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["EpochSums", "RunLayout", "RunProgress", "capture_rng_state", "restore_rng_state", "seed_everything"]


# ----------------------------------------------------------------------------- RNG states
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators.

    >>> seed_everything(3); a = torch.rand(1); seed_everything(3); torch.equal(a, torch.rand(1))
    True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if initialised) CUDA generator states, ``weights_only``-loadable.

    >>> s = capture_rng_state(); a = torch.rand(1); restore_rng_state(s); torch.equal(a, torch.rand(1))
    True
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (a CUDA state is restored only where CUDA is in use).

    >>> restore_rng_state(capture_rng_state())
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


# ----------------------------------------------------------------------------- progress
@dataclass
class RunProgress:
    """Where a run stands: the counters, the per-epoch records, and the best epoch so far.

    ``metric`` is the record key that picks the best epoch (higher is better): ``val_top1``
    for classification, the task's :attr:`~pedconv.training.task.Task.best_metric` otherwise.

    >>> p = RunProgress()
    >>> p.add_epoch({"epoch": 1, "val_top1": 50.0}), p.add_epoch({"epoch": 2, "val_top1": 40.0}), p.best_epoch
    (True, False, 1)
    """

    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    metric: str = "val_top1"

    def add_epoch(self, record: dict[str, Any]) -> bool:
        """Append a completed epoch's record (with ``epoch`` and :attr:`metric`); True if it is the best so far.

        A nan metric is never the best (a metric that cannot be computed does not replace ``best.pt``).
        """
        self.history.append(record)
        self.epoch, self.batches_done = record["epoch"], 0
        value = float(record[self.metric])
        is_best = value == value and (self.best_value is None or value > self.best_value)
        if is_best:
            self.best_value, self.best_epoch = value, record["epoch"]
        return is_best

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> RunProgress:
        """The progress recorded in a checkpoint."""
        return cls(ckpt["epoch"], ckpt["batches_done"], ckpt["global_step"], list(ckpt["history"]),
                   ckpt.get("best_value", ckpt.get("best_top1")), ckpt.get("best_epoch"),
                   ckpt.get("best_metric", "val_top1"))


@dataclass(frozen=True)
class RunLayout:
    """What fixes the data order of a run (with the seed): a resumed run must have the same."""

    global_batch: int
    steps_per_epoch: int
    world_size: int
    num_samples: int



@dataclass
class EpochSums:
    """Running sums of one rank over the optimizer steps done so far in an epoch (checkpointed).

    ``metrics`` holds the sums of the task step's own metrics
    (:attr:`~pedconv.training.task.StepResult.metrics`).

    >>> a = EpochSums(loss=2.0, images=4.0, steps=1, metrics={"top1": 300.0})
    >>> s = a + EpochSums.from_dict({"loss": 1.0, "images": 2.0, "steps": 1, "correct": 1.0})  # an old checkpoint's
    >>> s.loss, s.images, s.metrics
    (3.0, 6.0, {'top1': 400.0})
    """

    loss: float = 0.0
    infomax: float = 0.0
    images: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The sums as a plain dict (checkpointed per rank)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> EpochSums:
        """Inverse of :meth:`as_dict`; unknown keys are ignored, missing ones are 0. Sums written
        before step metrics existed carry classification's ``correct`` count: read as ``top1``."""
        d = dict(d or {})
        correct = float(d.pop("correct", 0.0) or 0.0)
        names = {f.name for f in fields(cls)}
        sums = cls(**{k: v for k, v in d.items() if k in names})
        sums.metrics = {k: float(v) for k, v in (sums.metrics or {}).items()}
        if correct and "top1" not in sums.metrics:
            sums.metrics["top1"] = 100.0 * correct
        return sums

    def __add__(self, other: EpochSums) -> EpochSums:
        """Two ranks' (or sessions') sums together: steps and seconds are the longer one's
        when both ran side by side; use :meth:`then` for one after the other."""
        return EpochSums(self.loss + other.loss, self.infomax + other.infomax, self.images + other.images,
                         max(self.steps, other.steps), max(self.seconds, other.seconds),
                         {k: self.metrics.get(k, 0.0) + other.metrics.get(k, 0.0)
                          for k in sorted(set(self.metrics) | set(other.metrics))})

    def then(self, later: EpochSums) -> EpochSums:
        """These sums followed by ``later``'s (a resumed epoch's sessions): everything adds up."""
        total = self + later
        total.steps, total.seconds = int(self.steps) + int(later.steps), self.seconds + later.seconds
        return total
