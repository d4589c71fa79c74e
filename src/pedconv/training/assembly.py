"""What a training run is made of, built from its options: :func:`assemble` gives the
:class:`RunParts` (data, model, loaders, task step, optimizer, schedule, scaler, layout);
:func:`resume_run` restores a checkpoint into them; :func:`wrap_ddp` and :func:`compiled` give
the model the training steps call. :func:`pedconv.training.train.train` drives them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..errors import CheckpointError, DataError, TrainError
from .checkpoint import CheckpointSaver, changed_options, check_layout, check_model_compatible, load_shared_checkpoint
from .data import DataSpec, GlobalBatchSampler, ShardBatchSampler, make_loader
from .distributed import DistEnv, broadcast_object, needs_find_unused_parameters
from .model_setup import ModelArgs, start_from_run
from .recipe import amp_dtype, build_optimizer, build_scheduler, effective_lr, grad_scaler
from .resume import restore_session, restore_training_state
from .run_log import Reporter
from .state import EpochSums, RunLayout, RunProgress, seed_everything
from .task import Task, TrainStep

__all__ = ["Determinism", "RunParts", "assemble", "compiled", "load_data", "make_saver", "resume_run", "wrap_ddp"]


class Determinism:
    """Context that sets torch's determinism switches for the run and restores them afterwards."""

    def __init__(self, deterministic: bool, device: torch.device) -> None:
        self.deterministic, self.device = deterministic, device

    def __enter__(self) -> Determinism:
        self.saved = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled(),
                      torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        return self

    def __exit__(self, *exc: Any) -> None:
        enabled, warn_only, cudnn_det, cudnn_bench = self.saved
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench


def load_data(args: argparse.Namespace, env: DistEnv, task: Task) -> DataSpec:
    def load() -> DataSpec:
        return task.build_data(args)

    # Rank 0 first (a --download, an offline set generated on first use); the others read what it wrote.
    if not env.distributed:
        return load()
    spec, error, failure = None, None, None
    if env.is_main:
        try:
            spec = load()
        except Exception as e:  # reported on every rank below
            failure, error = e, str(e)
    error = broadcast_object(error, env)
    if failure is not None:
        raise failure
    if error is not None:
        raise DataError(f"rank 0 could not load the data: {error}")
    return spec if spec is not None else load()


@dataclass
class RunParts:
    """The pieces of a training run, built from the options and the dataset by :func:`assemble`."""

    task: Task
    spec: DataSpec
    module: nn.Module  # the unwrapped model (SyncBatchNorm already in place)
    margs: ModelArgs
    use_sync_bn: bool
    sampler: GlobalBatchSampler
    loader: DataLoader
    val_loader: DataLoader
    step: TrainStep
    input_hw: tuple[int, int]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]
    lr: float
    layout: RunLayout

    def evaluate(self, args: argparse.Namespace, env: DistEnv, final: bool = False) -> dict[str, float]:
        """The task's metrics of the model on the validation split."""
        return self.task.evaluate(self.module, self.val_loader, args, self.spec, self.margs, env, final)


def build_run_model(args: argparse.Namespace, env: DistEnv, spec: DataSpec, task: Task,
                    report: Optional[Callable[[str], None]] = None) -> tuple[nn.Module, ModelArgs, bool]:
    """The task's model on the device (started from ``--init-from``, whose report goes to
    ``report``: the run's log), and whether SyncBatchNorm replaced its BatchNorms."""
    seed_everything(args.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    try:
        model, margs = task.build_model(args, spec)
        if getattr(args, "init_from", None):
            model = start_from_run(model, margs, args.init_from, report)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        raise TrainError(str(e)) from None
    model.to(env.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    use_sync_bn = env.distributed and env.device.type == "cuda" and args.sync_bn != "off"
    if use_sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, margs, use_sync_bn


def assemble(args: argparse.Namespace, env: DistEnv, spec: DataSpec, task: Task,
             report: Optional[Callable[[str], None]] = None) -> RunParts:
    """The run's parts from its options and data (``report``: where the model's start is described)."""
    module, margs, use_sync_bn = build_run_model(args, env, spec, task, report)
    sampler = GlobalBatchSampler(spec.num_train, args.batch_size, env.world_size, env.rank, args.grad_accum_steps,
                                 seed=args.seed, shuffle=True, with_seeds=not spec.in_memory, replay=task.replay(args))
    loader = make_loader(spec, spec.train, sampler, env.device, getattr(args, "workers", None), seed=args.seed,
                         persistent=True)
    val_sampler = ShardBatchSampler(spec.num_val, args.val_batch_size or 2 * args.batch_size, env.world_size, env.rank)
    val_loader = make_loader(spec, spec.val, val_sampler, env.device, getattr(args, "workers", None), seed=args.seed,
                             persistent=True)
    step = task.train_step(args, spec, margs, env)

    layout = RunLayout(global_batch=args.batch_size * env.world_size * args.grad_accum_steps,
                       steps_per_epoch=sampler.steps_per_epoch, world_size=env.world_size,
                       num_samples=sampler.num_samples)
    lr = effective_lr(args.lr, layout.global_batch, args.lr_base_batch, args.lr_scale)
    optimizer = build_optimizer(module, args, lr)
    scheduler = build_scheduler(optimizer, args, layout.steps_per_epoch)
    dtype = amp_dtype(env.device, args.amp_dtype) if args.amp else None
    return RunParts(task, spec, module, margs, use_sync_bn, sampler, loader, val_loader, step,
                  task.input_size(args, spec), optimizer, scheduler, grad_scaler(env.device, args.amp, dtype),
                  dtype, lr, layout)


def make_saver(parts: RunParts, args: argparse.Namespace, env: DistEnv, out: Path, config: dict[str, Any]
               ) -> CheckpointSaver:
    """The run's :class:`~pedconv.training.checkpoint.CheckpointSaver` (``last.pt``/``best.pt`` in ``out``)."""
    return CheckpointSaver(out, parts.module, parts.optimizer, parts.scheduler, parts.scaler, layout=parts.layout,
                           seed=args.seed, config=config, model_args=parts.margs,
                           data=parts.task.data_info(args, parts.spec), env=env, task_state=parts.step)


def resume_run(parts: RunParts, path: Path, config: dict[str, Any], env: DistEnv, seed: int, reporter: Reporter,
            saver: CheckpointSaver) -> tuple[RunProgress, EpochSums]:
    """Continue from checkpoint ``path``: check that it belongs to this run, then restore every state."""
    ckpt = load_shared_checkpoint(path, env)
    check_model_compatible(ckpt, config, path, parts.module)
    check_layout(ckpt, parts.layout, path)
    changed = changed_options(ckpt, config)
    if changed:
        reporter.warn("resuming with options that differ from the checkpoint's (they apply from here on): "
                      + ", ".join(changed))
    progress = restore_training_state(ckpt, path, parts.module, parts.optimizer, parts.scheduler, parts.scaler)
    sums = restore_session(ckpt, env, seed, reporter.warn, parts.step)
    progress.metric = parts.task.best_metric
    saver.repair_best(path, progress)
    reporter.info(f"resumed from {path}: epoch {progress.epoch + 1}, step {progress.batches_done}/"
                  f"{parts.layout.steps_per_epoch} (global step {progress.global_step})")
    return progress, sums


def wrap_ddp(parts: RunParts, args: argparse.Namespace, env: DistEnv) -> tuple[nn.Module, bool]:
    """The model to call (DDP in a multi-process run) and whether DDP looks for unused parameters."""
    if not env.distributed:
        return parts.module, False
    from torch.nn.parallel import DistributedDataParallel as DDP

    if args.find_unused_parameters == "auto" and parts.task.probe_with_images:
        find_unused = needs_find_unused_parameters(parts.module, (2, parts.margs.input_chans, *parts.input_hw),
                                                   env.device, args.infomax_weight)
    elif args.find_unused_parameters == "auto":  # a model that a random batch cannot probe: the safe choice
        find_unused = True
    else:
        find_unused = args.find_unused_parameters == "on"
    ddp = DDP(parts.module, device_ids=[env.device] if env.device.type == "cuda" else None,
              find_unused_parameters=find_unused)
    return ddp, find_unused


def compiled(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """The model to call in training steps: ``model`` under ``torch.compile`` with ``--compile``.

    The whole model (the DDP wrapper included, as DDP's compiled path expects) is compiled, so
    inductor fuses each PEDConv layer's generator, sampling and scalings with its neighbours; with
    ``reduce-overhead`` a CUDA run replays the step as a CUDA graph (the layers read nothing back
    from the device and draw their noise from torch's generator, so they are capturable). The
    unwrapped module keeps serving evaluation and checkpoints, so their keys do not change.
    """
    mode = getattr(args, "compile", "none")
    if mode in (None, "none"):
        return model
    return torch.compile(model, mode=None if mode == "default" else mode, backend=args.compile_backend)  # type: ignore[return-value]
