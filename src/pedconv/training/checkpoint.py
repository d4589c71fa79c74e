"""Run checkpoints of ``pedconv train``: what one holds, how it is written, read and checked.

A checkpoint is a plain dict saved with :func:`torch.save` that loads with
``torch.load(weights_only=True)`` (no pickled code: RNG states are tensors and plain
values). It is written only by :class:`CheckpointSaver` (``last.pt`` every epoch and every
``--checkpoint-every-steps``, copied to ``best.pt`` after the best epoch so far), always
atomically (:mod:`pedconv.utils.atomic`): a crash at any moment leaves the old or the new
file, never a partial one. It is read only by :func:`load_training_checkpoint`, which
checks the format and the keys, and checked against a run by :func:`check_model_compatible`
and :func:`check_layout`.

The schema, :data:`CHECKPOINT_FORMAT` ``pedconv-train-v1``:

=====================  =====================================================================
``format``             :data:`CHECKPOINT_FORMAT`
``model``              the unwrapped model's state dict
``model_args``         :class:`~pedconv.training.model_setup.ModelArgs` as a dict (rebuilds the model)
``optimizer``          the optimizer's state dict (``scheduler``: the timm scheduler's)
``scaler``             the GradScaler's state dict, or None when it is off
``epoch``              epochs completed; ``batches_done``: optimizer steps into the next one
``global_step``        optimizer steps so far
``steps_per_epoch``    ``global_batch``, ``world_size``: the data layout (:class:`RunLayout`)
``rng``                per rank: ``{"rng": capture_rng_state(), "sums": EpochSums.as_dict()}``, and
                       ``"task"``: the task step's state where it has one (Free AT's perturbation)
``history``            one metrics record per completed epoch (``metrics.jsonl``)
``sampler``            ``seed``, ``epoch``, ``start_step``, ``global_batch``, ``num_samples``
``best_value``         the best value so far of the metric ``best_metric`` (classification:
                       ``val_top1``) and its ``best_epoch`` (older checkpoints: ``best_top1``)
``config``             the resolved options (as in ``args.yaml``)
``attention_temperature`` DY-Conv's softmax temperature (KernelWarehouse's tau) at the last step, or
                       None (older checkpoints: ``dyconv_temperature``)
``data``               ``name``, ``num_classes``, ``in_chans``, ``input_size``, ``mean``, ``std``
``pedconv_version``    and ``torch_version`` that wrote it
=====================  =====================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
import torch.nn as nn

from ..baselines.temperature import annealed_attention_layers
from ..errors import CheckpointError
from ..utils.atomic import atomic_copy, atomic_write
from .config import RENAMED_OPTIONS
from .distributed import DistEnv, all_gather_object, broadcast_object
from .state import EpochSums, RunLayout, RunProgress, capture_rng_state

if TYPE_CHECKING:  # the model module reads checkpoints (--init-from); this one only stores ModelArgs.as_dict()
    from .model_setup import ModelArgs

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_KEYS",
    "RUNTIME_KEYS",
    "CheckpointSaver",
    "atomic_save",
    "changed_options",
    "check_layout",
    "check_model_compatible",
    "load_shared_checkpoint",
    "load_training_checkpoint",
]

CHECKPOINT_FORMAT = "pedconv-train-v1"
_REQUIRED = ("format", "model", "model_args", "optimizer", "scheduler", "epoch", "batches_done", "global_step",
             "config", "rng", "history")
# Configuration entries that define the network or the data it sees: a resumed run must agree on them.
MODEL_KEYS = ("model", "model_kwargs", "data", "img_size")
# Options that do not change what is computed: they may differ between a run and its resumption.
RUNTIME_KEYS = frozenset({"config", "output", "resume", "overwrite", "quiet", "log_every", "workers", "threads",
                          "checkpoint_every_steps", "device", "data_dir", "download", "val_batch_size",
                          "compile", "compile_backend"})

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- writing
def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` so that ``path`` is always either the old or the complete new file.

    >>> import tempfile
    >>> p = atomic_save({"w": torch.ones(2)}, tempfile.mkdtemp() + "/last.pt")
    >>> torch.load(p)["w"]
    tensor([1., 1.])
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


class CheckpointSaver:
    """Writes a run's ``last.pt`` and ``best.pt`` in the schema of this module (the only writer).

    Every rank calls :meth:`save` (each contributes its RNG state and running sums); the main
    rank writes. The parts that do not change during a run are given once here.

    Args:
        folder: the run folder.
        module: the unwrapped model; optimizer, scheduler, scaler: the recipe's.
        layout: the data layout; seed: the run's seed (the data order is a function of both).
        config: the resolved options; model_args: how the model was built.
        data: what the model sees (``name``, ``num_classes``, ``in_chans``, ``input_size``, ``mean``, ``std``).
        env: the process layout.
        task_state: the task's training step; if it has ``state_dict()`` (Free adversarial
            training's perturbation), every rank's is saved beside its RNG state.
    """

    def __init__(self, folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 scaler: torch.amp.GradScaler, *, layout: RunLayout, seed: int, config: Mapping[str, Any],
                 model_args: ModelArgs, data: Mapping[str, Any], env: DistEnv, task_state: Any = None) -> None:
        self.last, self.best = folder / "last.pt", folder / "best.pt"
        self.task_state = task_state if callable(getattr(task_state, "state_dict", None)) else None
        self.module, self.optimizer, self.scheduler, self.scaler = module, optimizer, scheduler, scaler
        self.layout, self.seed, self.config, self.model_args, self.data = layout, seed, config, model_args, data
        self.env = env

    def contents(self, progress: RunProgress, ranks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The checkpoint dict at ``progress``; ``ranks`` holds every rank's ``{"rng", "sums"}``."""
        from .. import __version__

        temps = [m.temperature for m in annealed_attention_layers(self.module)]
        layout = self.layout
        return {
            "format": CHECKPOINT_FORMAT, "model": self.module.state_dict(), "model_args": self.model_args.as_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": progress.epoch, "batches_done": progress.batches_done, "global_step": progress.global_step,
            "steps_per_epoch": layout.steps_per_epoch, "global_batch": layout.global_batch,
            "world_size": layout.world_size, "rng": list(ranks), "history": progress.history,
            # The data order is a function of these: the sampler needs no other state.
            "sampler": {"seed": self.seed, "epoch": progress.epoch, "start_step": progress.batches_done,
                        "global_batch": layout.global_batch, "num_samples": layout.num_samples},
            "best_metric": progress.metric, "best_value": progress.best_value, "best_epoch": progress.best_epoch,
            "config": dict(self.config),
            "attention_temperature": temps[0] if temps else None, "data": dict(self.data),
            "pedconv_version": __version__, "torch_version": str(torch.__version__),
        }

    def save(self, progress: RunProgress, sums: EpochSums, is_best: bool = False) -> None:
        """Write ``last.pt`` at ``progress`` (and copy it to ``best.pt`` if ``is_best``); call on every rank."""
        mine = {"rng": capture_rng_state(), "sums": sums.as_dict()}
        if self.task_state is not None:
            mine["task"] = self.task_state.state_dict()
        ranks = all_gather_object(mine, self.env)
        if not self.env.is_main:
            return
        atomic_save(self.contents(progress, ranks), self.last)
        if is_best:
            atomic_copy(self.last, self.best)

    def repair_best(self, resumed_from: Path, progress: RunProgress) -> None:
        """After resuming from the best epoch's ``last.pt``: (re)write ``best.pt`` from it, in case the
        run stopped between the two writes."""
        at_best_epoch = progress.best_epoch == progress.epoch and progress.batches_done == 0
        if self.env.is_main and at_best_epoch and resumed_from.resolve() != self.best.resolve():
            atomic_copy(resumed_from, self.best)


# ----------------------------------------------------------------------------- reading and checking
def load_training_checkpoint(path: PathLike) -> dict[str, Any]:
    """Read a pedconv training checkpoint onto the CPU, with errors that name the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated/corrupt, or is not a pedconv training checkpoint.

    >>> load_training_checkpoint("/nonexistent/last.pt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint /nonexistent/last.pt does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        if "Weights only load failed" in str(e):
            raise CheckpointError(f"checkpoint {path} holds Python objects that torch.load(weights_only=True) refuses "
                                  f"to unpickle, so it is not a plain `pedconv train` checkpoint") from e
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a pedconv training checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT!r}); for a bare state dict use "
                              f"`pedconv eval --model NAME --weights {path}`")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    return ckpt


def load_shared_checkpoint(path: Path, env: DistEnv) -> dict[str, Any]:
    """:func:`load_training_checkpoint` on the main rank, sent to every rank; its errors raise on all of them."""
    ckpt: Optional[dict[str, Any]] = None
    if env.is_main:
        try:
            ckpt = load_training_checkpoint(path)
        except (CheckpointError, FileNotFoundError) as e:
            ckpt = {"__error__": str(e)}
    ckpt = broadcast_object(ckpt, env)
    assert ckpt is not None
    if "__error__" in ckpt:
        raise CheckpointError(ckpt["__error__"])
    return ckpt


def check_model_compatible(ckpt: Mapping[str, Any], config: Mapping[str, Any], path: PathLike,
                           model: Optional[nn.Module] = None) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and every mismatch between ``ckpt`` and this run.

    Compares the configuration entries in :data:`MODEL_KEYS` and, given ``model``, the names and
    shapes of its state dict.

    >>> ck = {"config": {"model": "cifar_resnet20", "model_kwargs": {}, "data": "fashion_mnist", "img_size": None}}
    >>> try:
    ...     check_model_compatible(ck, dict(ck["config"], model="resnet18"), "last.pt")
    ... except CheckpointError as e:
    ...     print(e)
    checkpoint last.pt does not match this run: model: checkpoint 'cifar_resnet20', run 'resnet18'
    """
    saved = ckpt.get("config", {})
    problems = [f"{k}: checkpoint {saved.get(k)!r}, run {config.get(k)!r}" for k in MODEL_KEYS
                if saved.get(k) != config.get(k)]
    if model is not None and not problems:
        own = model.state_dict()
        theirs = ckpt["model"]
        missing = sorted(set(own) - set(theirs))
        unexpected = sorted(set(theirs) - set(own))
        shapes = [f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in theirs and tuple(theirs[k].shape) != tuple(own[k].shape)]
        for label, items in (("missing in checkpoint", missing), ("unexpected in checkpoint", unexpected),
                             ("shape (checkpoint vs model)", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match this run: " + "; ".join(problems))


def check_layout(ckpt: Mapping[str, Any], layout: RunLayout, path: PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``ckpt`` was written with this global batch and epoch length.

    >>> check_layout({"global_batch": 32, "steps_per_epoch": 10}, RunLayout(32, 10, 1, 320), "last.pt")
    """
    if ckpt.get("global_batch") != layout.global_batch or ckpt.get("steps_per_epoch") != layout.steps_per_epoch:
        raise CheckpointError(
            f"checkpoint {path} does not match this run: it was written with a global batch of "
            f"{ckpt.get('global_batch')} ({ckpt.get('steps_per_epoch')} steps per epoch), this run has "
            f"{layout.global_batch} ({layout.steps_per_epoch}); keep batch_size x processes x grad_accum_steps and "
            f"the training subset unchanged to resume")


def changed_options(ckpt: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """``"key old -> new"`` for every option (but :data:`RUNTIME_KEYS`) that differs from the checkpoint's.

    >>> changed_options({"config": {"lr": 0.1, "quiet": False}}, {"lr": 0.2, "quiet": True})
    ['lr 0.1 -> 0.2']
    """
    saved = {RENAMED_OPTIONS.get(k, k): v for k, v in ckpt["config"].items()}
    keys = sorted(k for k in set(config) | set(saved) if k not in RUNTIME_KEYS and config.get(k) != saved.get(k))
    return [f"{k} {saved.get(k)!r} -> {config.get(k)!r}" for k in keys]


