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
    """Running sums of one rank over the optimizer steps done so far in an epoch (checkpointed)."""

    loss: float = 0.0
    infomax: float = 0.0
    correct: float = 0.0
    images: float = 0.0
    steps: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The sums as a plain dict (checkpointed per rank)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> EpochSums:
        """Inverse of :meth:`as_dict`; unknown keys are ignored, missing ones are 0."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})
