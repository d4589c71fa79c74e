"""``pedconv train``: train any registered model, single process or ``torchrun`` (DDP), resumable.

Examples::

    pedconv train --model pedconv_cifar_resnet20 --epochs 10              # real Fashion-MNIST, offline
    pedconv train --config configs/fashion_mnist.yaml --model-kwargs rank=2 --output runs/r2
    pedconv train --config configs/resnet_imagenet.yaml --data-dir /data/imagenet --model pedconv_resnet50
    torchrun --nproc_per_node 8 -m pedconv.cli train --config configs/resnet_imagenet.yaml --batch-size 64 ...
    pedconv train --output runs/r2 --resume auto                          # continue after an interruption

The loss is ``task_loss + infomax_weight * pedconv.infomax_loss(model)`` (the PEDConv
info-max term of Eq. 6; zero for models without PEDConv layers). DY-Conv layers get their
softmax temperature annealed every step.

Learning rate: ``--lr`` is the rate for ``--lr-base-batch`` (256) images per optimizer step;
with ``--lr-scale linear`` (default) the rate used is ``lr * batch_size * processes *
grad_accum_steps / lr_base_batch``. ``--batch-size`` is per process.

Run folder (``--output``, default ``runs/<model>-<timestamp>``): ``args.yaml`` (the resolved
options; reusable with ``--config``), ``metrics.jsonl`` (one record per epoch), ``curves.png``,
``log.txt``, ``last.pt`` (every epoch and every ``--checkpoint-every-steps``) and ``best.pt``
(best validation top-1), written atomically with the user's umask. One run writes a folder
at a time (a second is refused, naming the first), and a folder's results are never replaced
without ``--overwrite`` (see :mod:`pedconv.training.run_folder`).

Stopping: SIGINT (Ctrl-C) or SIGTERM finishes the step in flight, writes ``last.pt`` and exits
with 130 / 143, printing the command that resumes the run; a loss that turns nan/inf stops
the run before anything is saved (``last.pt`` and ``best.pt`` keep the last good state), unless
``--skip-nonfinite N`` is given to skip up to N such steps.

Resuming (``--resume auto|PATH``; ``auto`` continues only the folder's own run) restores the
model, the optimizer state, the GradScaler,
the position in the epoch, every process's RNG states and the running epoch sums; the lr
schedule is recomputed from the options and the step count, and the data order and
augmentation are functions of ``(seed, epoch, position)``. Without ``--config`` the options
come from the run's ``args.yaml`` (flags given now override them, with a warning). With
``--deterministic`` an interrupted and resumed run ends with the same weights as an
uninterrupted one.

Metrics (``metrics.jsonl``): ``epoch`` (epochs completed), ``train_loss`` (task loss, without
the info-max term), ``infomax`` (unweighted), ``train_top1`` (against the un-mixed labels),
``val_loss``, ``val_top1``, ``val_top5``, ``lr`` (at the end of the epoch),
``train_images_per_s``, ``eval_images_per_s``, ``epoch_time_s``, ``global_step``,
``train_images`` / ``val_images`` (images seen in the epoch / evaluated, over all processes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..errors import (
    ConfigError,
    DivergedError,
    FolderBusyError,
    RunError,
    RunInterrupted,
    TrainError,
    TrainOptionsError,
    UsageError,
)
from ..method.infomax import INFOMAX_WEIGHT
from ..models import model_entrypoint
from ..tools.flops import count_parameters, parameter_summary
from ..utils.lock import FolderLock
from ..utils.options import check_output_folder
from .checkpoint import (
    CheckpointError,
    CheckpointSaver,
    RunLayout,
    RunProgress,
    changed_options,
    check_layout,
    check_model_compatible,
    load_shared_checkpoint,
    restore_session,
    restore_training_state,
    seed_everything,
)
from .config import apply_mapping, build_train_parser, load_yaml_config, write_args_yaml
from .data import BatchPreprocessor, DataSpec, GlobalBatchSampler, ShardBatchSampler, build_data, make_loader, mix_seed
from .distributed import (
    DistEnv,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    needs_find_unused_parameters,
    resolve_device,
)
from .interruption import StopRequests
from .loop import EpochSums, Trainer, evaluate
from .model import ModelArgs, build_model
from .recipe import (
    amp_dtype,
    build_criterion,
    build_optimizer,
    build_scheduler,
    check_optimizer,
    effective_lr,
    grad_scaler,
)
from .report import Reporter, plot_curves, write_metrics
from .run_folder import ARTIFACTS, decide_resume, output_folder, previous_args_yaml, resume_hint

__all__ = ["ARTIFACTS", "TrainError", "TrainOptionsError", "build_parser", "config_layer", "main", "parse_args",
           "resolve_config", "run", "train", "validate_args"]

_NOT_SAVED = ("config", "resume", "overwrite")


# ----------------------------------------------------------------------------- options
def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv train`` options, added to ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--epochs", "2"]).epochs
    2
    """
    if parser is None:
        parser = argparse.ArgumentParser(prog="pedconv train", description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    return build_train_parser(parser)


def validate_args(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, options that cannot work: :class:`~pedconv.errors.TrainOptionsError`
    (a usage error) for options that do not make sense or do not work together,
    :class:`~pedconv.errors.TrainError` for a device or an output folder this machine does not have.

    (Each option's own range is checked by its argparse ``type``, for YAML configs too.)

    >>> validate_args(build_parser().parse_args(["--resume", "auto"]))
    Traceback (most recent call last):
    ...
    pedconv.errors.TrainOptionsError: --resume auto needs --output DIR (the run folder to continue)
    """
    try:
        model_entrypoint(args.model)
        check_optimizer(args.opt)
    except ValueError as e:
        raise TrainOptionsError(str(e)) from None
    if not isinstance(args.model_kwargs, dict):
        raise TrainOptionsError(f"model_kwargs must be a mapping, got {args.model_kwargs!r}")
    _check_combinations(args)
    _check_machine(args)


def _check_combinations(args: argparse.Namespace) -> None:
    if (args.mixup > 0 or args.cutmix > 0) and args.batch_size % 2:
        raise TrainOptionsError(f"mixup/cutmix need an even --batch-size (timm Mixup pairs samples), got "
                                f"{args.batch_size}")
    if args.resume == "auto" and args.output is None:
        raise TrainOptionsError("--resume auto needs --output DIR (the run folder to continue)")
    if args.resume not in (None, "auto") and not Path(args.resume).is_file():
        raise TrainOptionsError(f"--resume {args.resume}: no such checkpoint file")
    if args.warmup_epochs > args.epochs:
        raise TrainOptionsError(f"--warmup-epochs {args.warmup_epochs} is longer than --epochs {args.epochs}")
    if args.data == "imagefolder" and not args.data_dir:
        raise TrainOptionsError("--data imagefolder needs --data-dir DIR (the folder holding train/ and val/ with "
                                "one subfolder per class)")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    step = args.batch_size * processes * args.grad_accum_steps
    if args.train_subset is not None and args.train_subset < step:
        raise TrainOptionsError(
            f"--train-subset {args.train_subset} is smaller than one optimizer step of {step} images (--batch-size "
            f"{args.batch_size} x {processes} process(es) x --grad-accum-steps {args.grad_accum_steps}); use a "
            "smaller --batch-size or a larger --train-subset")


def _check_machine(args: argparse.Namespace) -> None:
    """The device exists here and the run folder can be written (before the data are loaded)."""
    try:
        resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    except UsageError as e:
        raise TrainOptionsError(str(e)) from None
    try:
        check_output_folder(output_folder(args))
    except RunError as e:
        raise TrainError(str(e)) from None


def _yaml_layer(parser: argparse.ArgumentParser, config: Optional[str], resume: Optional[str],
                output: Optional[str]) -> dict[str, Any]:
    path = config or previous_args_yaml(resume, output)
    return load_yaml_config(path, parser) if path else {}


def config_layer(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The option values that lie under the command line: the ``--config`` YAML file, or, when
    resuming without one, the resumed run's ``args.yaml`` (the CLI parses again with them as defaults).

    Raises:
        ConfigError: the file is missing or invalid (a usage error).
    """
    return _yaml_layer(parser, args.config, args.resume, args.output)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``pedconv train`` options (``--config`` YAML < flags) as the CLI does; usage errors exit with status 2.

    When resuming (``--resume``) without ``--config``, the resumed run's ``args.yaml`` is the
    YAML layer, so ``pedconv train --output DIR --resume auto`` continues with the same options.

    >>> parse_args(["--model", "cifar_resnet20", "--lr", "0.2"]).lr
    0.2
    """
    from ..cli import parse_args as parse_command_line

    return parse_command_line(["train", *(sys.argv[1:] if argv is None else argv)])


def resolve_config(config: Union[str, os.PathLike, Mapping[str, Any], argparse.Namespace, None] = None,
                   **overrides: Any) -> argparse.Namespace:
    """Options from a YAML file path, a mapping (option names as keys; a ``config`` key names a
    YAML file), a Namespace, or defaults.

    Precedence: defaults < ``config["config"]`` YAML (when resuming without one: the run's
    ``args.yaml``) < the other keys of ``config`` < ``overrides``.

    Raises:
        TrainOptionsError: unknown or invalid options, or options that do not work together.

    >>> a = resolve_config({"model": "cifar_resnet20", "epochs": 2}, lr=0.05)
    >>> a.model, a.epochs, a.lr, a.batch_size
    ('cifar_resnet20', 2, 0.05, 128)
    """
    parser = build_parser()
    if isinstance(config, (str, os.PathLike)):
        values: dict[str, Any] = {"config": os.fspath(config)}
    elif isinstance(config, argparse.Namespace):
        values = dict(vars(config))
        values.pop("command", None)
    else:
        values = dict(config or {})
    values.update(overrides)
    args = parser.parse_args([])
    try:
        layer = _yaml_layer(parser, values.pop("config", None), values.get("resume"), values.get("output"))
        for k, v in {**layer, **apply_mapping(parser, values, "train() config")}.items():
            setattr(args, k, v)
    except ConfigError as e:
        raise TrainOptionsError(str(e)) from None
    validate_args(args)
    return args


# ----------------------------------------------------------------------------- the run folder
def _prepare_output(args: argparse.Namespace, env: DistEnv, out: Path) -> Optional[Path]:
    """Check the run folder and decide the checkpoint to resume from (rank 0 decides, all ranks agree)."""
    decision: tuple[Optional[str], Optional[str]] = (None, None)
    if env.is_main:
        try:
            resume = decide_resume(args, out)
            decision = (None if resume is None else str(resume), None)
        except (TrainError, OSError) as e:
            decision = (None, str(e))
    resume_s, error = broadcast_object(decision, env)
    if error is not None:
        raise TrainError(error)
    return None if resume_s is None else Path(resume_s)


def _lock_folder(out: Path, env: DistEnv, stack: contextlib.ExitStack) -> None:
    """Hold ``out``'s lock for the rest of ``stack`` (rank 0 holds it for the whole job)."""
    error: Optional[str] = None
    if env.is_main:
        try:
            stack.enter_context(FolderLock(out, "pedconv train"))
        except (FolderBusyError, OSError) as e:
            error = str(e) if isinstance(e, FolderBusyError) else f"cannot use --output {out}: {e}"
    error = broadcast_object(error, env)
    if error is not None:
        raise FolderBusyError(error)


def _saved_config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else copy.deepcopy(v)) for k, v in vars(args).items()
            if k not in _NOT_SAVED and k != "command"}


# ----------------------------------------------------------------------------- what a run is made of
class _Determinism:
    """Context that sets torch's determinism switches for the run and restores them afterwards."""

    def __init__(self, deterministic: bool, device: torch.device) -> None:
        self.deterministic, self.device = deterministic, device

    def __enter__(self) -> _Determinism:
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


def _load_data(args: argparse.Namespace, env: DistEnv) -> DataSpec:
    def load() -> DataSpec:
        return build_data(args.data, args.data_dir, args.download, args.train_subset, args.val_subset,
                          args.subset_seed, args.img_size, args.crop_pct, augment=args.augment)

    if not (args.download and env.distributed):
        return load()
    # With --download, rank 0 fetches first; the others read what it wrote.
    spec, error = None, None
    if env.is_main:
        try:
            spec = load()
        except Exception as e:  # reported on every rank below
            error = f"{type(e).__name__}: {e}"
    error = broadcast_object(error, env)
    if error is not None:
        raise FileNotFoundError(error)
    return spec if spec is not None else load()


@dataclass
class _Parts:
    """The pieces of a training run, built from the options and the dataset by :func:`_assemble`."""

    spec: DataSpec
    module: nn.Module  # the unwrapped model (SyncBatchNorm already in place)
    margs: ModelArgs
    use_sync_bn: bool
    sampler: GlobalBatchSampler
    loader: DataLoader
    val_loader: DataLoader
    train_pre: BatchPreprocessor
    val_pre: BatchPreprocessor
    input_hw: tuple[int, int]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    mixup: Optional[Callable[..., Any]]
    criterion: nn.Module
    amp_dtype: Optional[torch.dtype]
    lr: float
    layout: RunLayout


def _build_model(args: argparse.Namespace, env: DistEnv, spec: DataSpec) -> tuple[nn.Module, ModelArgs, bool]:
    seed_everything(args.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    try:
        model, margs = build_model(args.model, spec.num_classes, spec.in_chans, args.model_kwargs)
    except ValueError as e:
        raise TrainError(str(e)) from None
    model.to(env.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    use_sync_bn = env.distributed and env.device.type == "cuda" and args.sync_bn != "off"
    if use_sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, margs, use_sync_bn


def _assemble(args: argparse.Namespace, env: DistEnv, spec: DataSpec) -> _Parts:
    module, margs, use_sync_bn = _build_model(args, env, spec)
    sampler = GlobalBatchSampler(spec.num_train, args.batch_size, env.world_size, env.rank, args.grad_accum_steps,
                                 seed=args.seed, shuffle=True, with_seeds=not spec.in_memory)
    loader = make_loader(spec, spec.train, sampler, env.device, args.workers, seed=args.seed, persistent=True)
    val_sampler = ShardBatchSampler(spec.num_val, args.val_batch_size or 2 * args.batch_size, env.world_size, env.rank)
    val_loader = make_loader(spec, spec.val, val_sampler, env.device, args.workers, seed=args.seed, persistent=True)
    size = (args.img_size, args.img_size) if (args.img_size and spec.in_memory) else None
    out_chans = margs.input_chans if margs.input_chans != spec.in_chans else None
    train_pre = BatchPreprocessor(spec.mean, spec.std, augment=args.augment and spec.augment_on_device, size=size,
                                  out_chans=out_chans, channels_last=args.channels_last)
    val_pre = BatchPreprocessor(spec.mean, spec.std, size=size, out_chans=out_chans, channels_last=args.channels_last)

    layout = RunLayout(global_batch=args.batch_size * env.world_size * args.grad_accum_steps,
                       steps_per_epoch=sampler.steps_per_epoch, world_size=env.world_size,
                       num_samples=sampler.num_samples)
    lr = effective_lr(args.lr, layout.global_batch, args.lr_base_batch, args.lr_scale)
    optimizer = build_optimizer(module, args, lr)
    scheduler = build_scheduler(optimizer, args, layout.steps_per_epoch)
    dtype = amp_dtype(env.device, args.amp_dtype) if args.amp else None
    mixup, criterion = build_criterion(args, spec.num_classes)
    return _Parts(spec, module, margs, use_sync_bn, sampler, loader, val_loader, train_pre, val_pre,
                  size or spec.input_size, optimizer, scheduler, grad_scaler(env.device, args.amp, dtype), mixup,
                  criterion, dtype, lr, layout)


def _saver(parts: _Parts, args: argparse.Namespace, env: DistEnv, out: Path, config: dict[str, Any]) -> CheckpointSaver:
    spec = parts.spec
    data = {"name": spec.name, "num_classes": spec.num_classes, "in_chans": spec.in_chans,
            "input_size": list(parts.input_hw), "mean": list(spec.mean), "std": list(spec.std)}
    return CheckpointSaver(out, parts.module, parts.optimizer, parts.scheduler, parts.scaler, layout=parts.layout,
                           seed=args.seed, config=config, model_args=parts.margs, data=data, env=env)


def _resume(parts: _Parts, path: Path, config: dict[str, Any], env: DistEnv, seed: int, reporter: Reporter,
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
    sums = restore_session(ckpt, env, seed, reporter.warn)
    saver.repair_best(path, progress)
    reporter.info(f"resumed from {path}: epoch {progress.epoch + 1}, step {progress.batches_done}/"
                  f"{parts.layout.steps_per_epoch} (global step {progress.global_step})")
    return progress, sums


def _wrap_ddp(parts: _Parts, args: argparse.Namespace, env: DistEnv) -> tuple[nn.Module, bool]:
    """The model to call (DDP in a multi-process run) and whether DDP looks for unused parameters."""
    if not env.distributed:
        return parts.module, False
    from torch.nn.parallel import DistributedDataParallel as DDP

    if args.find_unused_parameters == "auto":
        find_unused = needs_find_unused_parameters(parts.module, (2, parts.margs.input_chans, *parts.input_hw),
                                                   env.device, args.infomax_weight)
    else:
        find_unused = args.find_unused_parameters == "on"
    ddp = DDP(parts.module, device_ids=[env.device] if env.device.type == "cuda" else None,
              find_unused_parameters=find_unused)
    return ddp, find_unused


def _announce(parts: _Parts, args: argparse.Namespace, env: DistEnv, out: Path, config: dict[str, Any],
              progress: RunProgress, find_unused: bool, reporter: Reporter) -> None:
    """Write ``args.yaml`` (and a resumed run's ``metrics.jsonl``) and describe the run."""
    layout = parts.layout
    params, decoder = count_parameters(parts.module)  # deployable, as pedconv.profile_model and compare count
    info = {"processes": env.world_size, "device": str(env.device), "global_batch": layout.global_batch,
            "effective_lr": parts.lr, "steps_per_epoch": layout.steps_per_epoch,
            "train_images": parts.spec.num_train, "val_images": parts.spec.num_val,
            "model_args": parts.margs.as_dict(), "params": params, "infomax_decoder_params": decoder,
            "torch": str(torch.__version__)}
    if env.is_main:
        write_args_yaml(config, out / "args.yaml", info)
        if progress.history:
            write_metrics(progress.history, out / "metrics.jsonl")
    reporter.info(f"{args.model}: {parameter_summary(params, decoder)}, {parts.spec.name} {parts.spec.num_train} "
                  f"train / {parts.spec.num_val} val images, {env.world_size} process(es) on {env.device}, global "
                  f"batch {layout.global_batch}, lr {parts.lr:.4g}, {layout.steps_per_epoch} steps/epoch x "
                  f"{args.epochs} epochs" + (", DDP find_unused_parameters" if find_unused else "") + f" -> {out}")


# ----------------------------------------------------------------------------- the epochs
def _epoch_record(parts: _Parts, args: argparse.Namespace, env: DistEnv, epoch: int, global_step: int,
                  sums: EpochSums, started: float) -> dict[str, Any]:
    """Evaluate after an epoch and make its ``metrics.jsonl`` record (sums over every rank).

    ``started`` is the epoch's start on the ``time.perf_counter`` clock, earlier by the
    seconds a resumed epoch had run before the interruption.
    """
    loss_s, info_s, correct_s, images_s, seconds_s = all_reduce_sum(
        [sums.loss, sums.infomax, sums.correct, sums.images, sums.seconds], env)
    if env.distributed and not parts.use_sync_bn and args.dist_bn != "none":
        from timm.utils import distribute_bn

        distribute_bn(parts.module, env.world_size, reduce=args.dist_bn == "reduce")
    metrics = evaluate(parts.module, parts.val_loader, parts.val_pre, env, args.amp, parts.amp_dtype)
    return {
        "epoch": epoch + 1, "global_step": global_step,
        "train_loss": loss_s / max(images_s, 1), "infomax": info_s / max(images_s, 1),
        "train_top1": 100.0 * correct_s / max(images_s, 1),
        "val_loss": metrics["val_loss"], "val_top1": metrics["val_top1"], "val_top5": metrics["val_top5"],
        "lr": parts.optimizer.param_groups[0]["lr"],
        "train_images_per_s": images_s / max(seconds_s / env.world_size, 1e-9),
        "eval_images_per_s": metrics["eval_images_per_s"],
        "train_images": int(images_s), "val_images": int(metrics["val_images"]),
        "epoch_time_s": time.perf_counter() - started,
    }


def _stop_now(stop: StopRequests, env: DistEnv) -> bool:
    """Whether any process was asked to stop (agreed over processes, so all stop at the same step)."""
    flag = 1.0 if stop.requested else 0.0
    return (all_reduce_sum([flag], env)[0] if env.distributed else flag) > 0


def _check_finite(trainer: Trainer, progress: RunProgress, out: Path) -> None:
    """Stop before anything is saved once the loss has been nan/inf (the last good checkpoint stays)."""
    bad = trainer.first_nonfinite_step()
    if bad is None:
        return
    kept = (f"{out / 'last.pt'} still holds the last good state (epoch {progress.epoch}, global step "
            f"{progress.global_step}) and best.pt is untouched" if (out / "last.pt").is_file()
            else "no checkpoint had been written yet")
    raise DivergedError(
        f"training diverged: the loss was nan/inf at global step {bad}; stopped without saving, so {kept}; "
        f"continue with a lower --lr or with --clip-grad (pedconv train --output {out} --resume auto --lr ...), "
        "or let --skip-nonfinite N ride out rare spikes")


def _interrupted(stop: StopRequests, out: Path, where: str) -> RunInterrupted:
    signum = stop.signal_number or signal.SIGINT
    return RunInterrupted(f"stopped by {signal.Signals(signum).name} at {where} with {out / 'last.pt'} saved; "
                          f"resume with: pedconv train --output {out} --resume auto", signum)


def _train_epochs(parts: _Parts, trainer: Trainer, saver: CheckpointSaver, progress: RunProgress, sums: EpochSums,
                  args: argparse.Namespace, env: DistEnv, out: Path, reporter: Reporter, stop: StopRequests) -> None:
    """The remaining epochs: train, evaluate, checkpoint, write the metrics and the curves; stop
    cleanly (after saving) on a signal, and before saving on a non-finite loss."""
    every, steps = args.checkpoint_every_steps, parts.layout.steps_per_epoch

    def on_step(step: int, global_step: int, current: Callable[[], EpochSums]) -> None:
        stopping = step + 1 < steps and _stop_now(stop, env)  # the epoch's last step: stop after its end
        if stopping or (every and global_step % every == 0 and step + 1 < steps):
            _check_finite(trainer, progress, out)
            saver.save(replace(progress, batches_done=step + 1, global_step=global_step), current())
        if stopping:
            raise _interrupted(stop, out, f"epoch {progress.epoch + 1}, step {step + 1}/{steps}")

    first_epoch = progress.epoch
    for epoch in range(first_epoch, args.epochs):
        resumed = epoch == first_epoch
        started = time.perf_counter() - (sums.seconds if resumed else 0.0)
        epoch_sums, progress.global_step = trainer.train_epoch(
            epoch, progress.batches_done if resumed else 0, progress.global_step, sums if resumed else EpochSums(),
            on_step)
        _check_finite(trainer, progress, out)
        record = _epoch_record(parts, args, env, epoch, progress.global_step, epoch_sums, started)
        is_best = progress.add_epoch(record)
        saver.save(progress, EpochSums(), is_best)
        if env.is_main:
            write_metrics(progress.history, out / "metrics.jsonl")
            plot_curves(progress.history, out / "curves.png", title=f"{args.model} on {parts.spec.name}")
        reporter.end_epoch(record)
        if epoch + 1 < args.epochs and _stop_now(stop, env):
            raise _interrupted(stop, out, f"the end of epoch {epoch + 1}")


def _start(args: argparse.Namespace, env: DistEnv, out: Path, resume_path: Optional[Path],
           reporter: Reporter) -> tuple[_Parts, CheckpointSaver, RunProgress, EpochSums, nn.Module, bool]:
    """Build the run's parts and restore a resumed run's state."""
    parts = _assemble(args, env, _load_data(args, env))
    config = _saved_config(args)
    saver = _saver(parts, args, env, out, config)
    if resume_path is not None:
        try:
            progress, sums = _resume(parts, resume_path, config, env, args.seed, reporter, saver)
        except CheckpointError as e:
            if args.resume != "auto":
                raise
            raise CheckpointError(f"{e}; {resume_hint(out)}") from None
    else:
        progress, sums = RunProgress(), EpochSums()
        seed_everything(mix_seed(args.seed, env.rank))  # per-rank streams (PEDConv sampling, mixup)
    model, find_unused = _wrap_ddp(parts, args, env)
    _announce(parts, args, env, out, config, progress, find_unused, reporter)
    return parts, saver, progress, sums, model, find_unused


def _run(args: argparse.Namespace, env: DistEnv) -> dict[str, Any]:
    if args.infomax_weight is None:
        args.infomax_weight = INFOMAX_WEIGHT
    out = output_folder(args)
    args.output = str(out)
    with contextlib.ExitStack() as stack:
        _lock_folder(out, env, stack)
        resume_path = _prepare_output(args, env, out)
        reporter = Reporter(enabled=env.is_main, quiet=args.quiet, log_every=args.log_every, log_file=out / "log.txt")
        parts, saver, progress, sums, model, _ = _start(args, env, out, resume_path, reporter)
        trainer = Trainer(model, parts.module, parts.optimizer, parts.scheduler, parts.scaler, parts.loader,
                          parts.sampler, parts.train_pre, parts.mixup, parts.criterion, env, args,
                          amp_dtype=parts.amp_dtype, augment_on_device=parts.spec.augment_on_device,
                          reporter=reporter)
        with StopRequests() as stop:
            _train_epochs(parts, trainer, saver, progress, sums, args, env, out, reporter, stop)
        barrier(env)
    if progress.history:
        reporter.info(f"done: val top-1 {progress.history[-1]['val_top1']:.2f}% (best {progress.best_top1:.2f}% at "
                      f"epoch {progress.best_epoch}) -> {out}")
    return {
        "output_dir": str(out), "final": progress.history[-1] if progress.history else None,
        "best_top1": progress.best_top1, "best_epoch": progress.best_epoch, "history": progress.history,
        "last_checkpoint": str(saver.last), "best_checkpoint": str(saver.best), "lr": parts.lr,
        "global_batch": parts.layout.global_batch, "world_size": env.world_size,
        "model_args": parts.margs.as_dict(), "input_size": [parts.margs.input_chans, *parts.input_hw],
    }


def train(config: Union[str, os.PathLike, Mapping[str, Any], argparse.Namespace, None] = None,
          **overrides: Any) -> dict[str, Any]:
    """Train a model; the programmatic form of ``pedconv train``.

    Args:
        config: a YAML config file, option values keyed by option name (``{"model": ...,
            "epochs": ...}``; a ``"config"`` key names a YAML file), a parsed Namespace, or
            None for defaults.
        **overrides: more option values (win over ``config``).

    Returns:
        ``output_dir``, ``final`` (the last epoch's metrics), ``best_top1``, ``best_epoch``,
        ``history`` (all epochs), ``last_checkpoint``, ``best_checkpoint``, ``lr`` (effective),
        ``global_batch``, ``world_size``, ``model_args``, ``input_size`` (``[C, H, W]`` the model sees).

    Raises:
        TrainOptionsError: invalid options; TrainError: a run folder, model or data problem;
        FileNotFoundError: missing dataset; CheckpointError: an unreadable or mismatching checkpoint.

    Example:
        >>> import tempfile
        >>> from pedconv.training.train import train
        >>> out = tempfile.mkdtemp()
        >>> r = train(model="cifar_resnet20", model_kwargs={"width": 8}, epochs=1, train_subset=256,
        ...           val_subset=128, batch_size=64, workers=0, output=out, quiet=True)
        >>> sorted(r["final"])[:3], r["output_dir"] == out
        (['epoch', 'epoch_time_s', 'eval_images_per_s'], True)
    """
    args = resolve_config(config, **overrides)
    env = init_distributed(args.device)
    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        with _Determinism(args.deterministic, env.device):
            return _run(args, env)
    finally:
        torch.set_num_threads(threads)
        cleanup(env)


# ----------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    """``pedconv train`` on parsed options; errors propagate to :func:`pedconv.cli.main`, which prints them.

    A run stopped by SIGINT/SIGTERM (saved, see :mod:`.interruption`) prints the command that
    resumes it and returns 130 / 143; an immediate stop (a second Ctrl-C) returns 130.
    """
    try:
        train(args)
    except RunInterrupted as e:
        print(f"pedconv train: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        where = f"pedconv train --output {args.output} --resume auto" if args.output else "the same command"
        print(f"pedconv train: interrupted; the last checkpoint written is kept: resume with {where}", file=sys.stderr)
        return 130
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pedconv train`` entry point: the exit status (0 ok, 1 error, 2 usage error, 130 interrupted).

    >>> main(["--model", "resnet_20"])  # stderr: one line, "... error: unknown model 'resnet_20'; did you mean ..."
    2
    """
    from ..cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
