"""Resuming a run from its checkpoint: the model, optimizer and scaler, the progress, this rank's
RNG state and running sums (:func:`restore_training_state`, :func:`restore_session`); and
rebuilding the model a checkpoint holds (:func:`model_from_checkpoint`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Callable, Union

import torch
import torch.nn as nn

from ..baselines.temperature import annealed_attention_layers
from ..errors import CheckpointError
from .checkpoint import load_training_checkpoint
from .data import mix_seed
from .distributed import DistEnv
from .model_setup import ModelArgs
from .state import EpochSums, RunProgress, restore_rng_state, seed_everything

__all__ = ["model_from_checkpoint", "restore_session", "restore_training_state"]

PathLike = Union[str, os.PathLike]


def restore_training_state(ckpt: Mapping[str, Any], path: PathLike, module: nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler: Any,
                           scaler: torch.amp.GradScaler) -> RunProgress:
    """Load the model, the optimizer's buffers and the GradScaler from ``ckpt``; returns its progress.

    The optimizer's hyper-parameters (lr, weight decay, momentum) stay those of this run, so a
    changed option takes effect; the per-step lr schedule is a function of the options and the
    step count, so it is recomputed, not loaded.
    """
    module.load_state_dict(ckpt["model"])
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: optimizer state does not fit this run ({e})") from None
    for group, values in zip(optimizer.param_groups, hyper):
        group.update(values)
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    progress = RunProgress.from_checkpoint(ckpt)
    scheduler.step_update(num_updates=progress.global_step)
    return progress


def restore_session(ckpt: Mapping[str, Any], env: DistEnv, seed: int, warn: Callable[[str], None],
                    task_state: Any = None) -> EpochSums:
    """This rank's RNG state, running epoch sums and task step state (``task_state.load_state_dict``,
    when the step has one and the checkpoint holds it) from ``ckpt``.

    When the number of processes changed, the RNG streams are re-seeded (with a warning), the
    task state starts afresh and the main rank carries the sums of all the checkpoint's ranks.
    """
    ranks = ckpt["rng"]
    if len(ranks) == env.world_size:
        restore_rng_state(ranks[env.rank]["rng"])
        if ranks[env.rank].get("task") is not None and callable(getattr(task_state, "load_state_dict", None)):
            task_state.load_state_dict(ranks[env.rank]["task"])
        return EpochSums.from_dict(ranks[env.rank]["sums"])
    warn(f"the checkpoint was written by {len(ranks)} processes, this run has {env.world_size}: RNG "
         "streams are re-seeded, so the run will not reproduce an uninterrupted one exactly")
    seed_everything(mix_seed(seed, env.rank, ckpt["global_step"]))
    if not env.is_main:
        return EpochSums()
    total = EpochSums()
    for r in ranks:
        total = total + EpochSums.from_dict(r["sums"])
    return total


def model_from_checkpoint(path: PathLike) -> tuple[nn.Module, ModelArgs, dict[str, Any]]:
    """Rebuild the model a training checkpoint holds (weights and DY-Conv temperature); also its
    :class:`~pedconv.training.model_setup.ModelArgs` and the checkpoint itself.

    Raises:
        FileNotFoundError, CheckpointError: as :func:`load_training_checkpoint`, or when the
        weights do not fit the model as the registry builds it now.
    """
    ckpt = load_training_checkpoint(path)
    margs = ModelArgs(**ckpt["model_args"])
    model = margs.build()
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit {margs.name} as built now: {e}") from None
    temperature = ckpt.get("attention_temperature", ckpt.get("dyconv_temperature"))  # its former key
    if temperature is not None:
        for m in annealed_attention_layers(model):
            m.temperature = float(temperature)
    return model, margs, ckpt
