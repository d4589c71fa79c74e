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
import json
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
    CheckpointError,
    ConfigError,
    DataError,
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
from ..utils.atomic import atomic_write_text
from ..utils.lock import FolderLock
from ..utils.options import check_output_folder
from ..utils.reporting import json_ready
from .checkpoint import (
    CheckpointSaver,
    changed_options,
    check_layout,
    check_model_compatible,
    load_shared_checkpoint,
)
from .classify import Classification
from .config import apply_mapping, build_train_parser, load_yaml_config, preset_values, write_args_yaml
from .data import DataSpec, GlobalBatchSampler, ShardBatchSampler, make_loader, mix_seed
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
from .loop import Trainer
from .model import ModelArgs, start_from_run
from .recipe import (
    amp_dtype,
    build_optimizer,
    build_scheduler,
    check_optimizer,
    effective_lr,
    grad_scaler,
)
from .report import Reporter, plot_curves, write_metrics
from .resume import restore_session, restore_training_state
from .run_folder import ARTIFACTS, decide_resume, output_folder, previous_args_yaml, resume_hint, start_line_device
from .state import EpochSums, RunLayout, RunProgress, seed_everything
from .task import Task, TrainStep

__all__ = ["ARTIFACTS", "TrainError", "TrainOptionsError", "build_parser", "config_layer", "main", "parse_args",
           "resolve_config", "run", "train", "validate_args"]

_NOT_SAVED = ("config", "resume", "overwrite")


# ----------------------------------------------------------------------------- options
def build_parser(parser: Optional[argparse.ArgumentParser] = None, task: Optional[Task] = None
                 ) -> argparse.ArgumentParser:
    """The training options of ``task`` (default: ``pedconv train``'s classification), added to
    ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--epochs", "2"]).epochs
    2
    """
    task = task or Classification()
    if parser is None:
        parser = argparse.ArgumentParser(prog=task.train_command, description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    return build_train_parser(parser, task)


def validate_args(args: argparse.Namespace, task: Optional[Task] = None) -> None:
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
    (task or Classification()).check_args(args)
    _check_machine(args)


def _check_combinations(args: argparse.Namespace) -> None:
    if args.resume == "auto" and args.output is None:
        raise TrainOptionsError("--resume auto needs --output DIR (the run folder to continue)")
    if args.resume not in (None, "auto") and not Path(args.resume).is_file():
        raise TrainOptionsError(f"--resume {args.resume}: no such checkpoint file")
    if args.warmup_epochs > args.epochs:
        raise TrainOptionsError(f"--warmup-epochs {args.warmup_epochs} is longer than --epochs {args.epochs}")
    _check_compile(args)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    step = args.batch_size * processes * args.grad_accum_steps
    if getattr(args, "train_subset", None) is not None and args.train_subset < step:
        raise TrainOptionsError(
            f"--train-subset {args.train_subset} is smaller than one optimizer step of {step} images (--batch-size "
            f"{args.batch_size} x {processes} process(es) x --grad-accum-steps {args.grad_accum_steps}); use a "
            "smaller --batch-size or a larger --train-subset")


def _check_compile(args: argparse.Namespace) -> None:
    """``--compile`` and ``--compile-backend`` go together, with a backend torch knows."""
    mode, backend = getattr(args, "compile", "none"), getattr(args, "compile_backend", "inductor")
    if mode == "none":
        if backend != "inductor":
            raise TrainOptionsError(f"--compile-backend {backend} needs --compile MODE (compilation is off)")
        return
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise TrainOptionsError(f"--compile-backend {backend}: not a torch.compile backend; use one of {known}")
    if mode != "default" and backend != "inductor":
        raise TrainOptionsError(f"--compile {mode} is a mode of the inductor backend, not of {backend}; "
                                "use --compile default with other backends")


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


def config_layer(args: argparse.Namespace, parser: argparse.ArgumentParser, task: Optional[Task] = None
                 ) -> dict[str, Any]:
    """The option values that lie under the command line: the task's ``--preset`` (``--quick``),
    then the ``--config`` YAML file or, when resuming without one, the resumed run's ``args.yaml``
    (the CLI parses again with them as defaults).

    Raises:
        ConfigError: the file is missing or invalid (a usage error).
    """
    yaml_values = _yaml_layer(parser, args.config, args.resume, args.output)
    preset = yaml_values.get("preset", getattr(args, "preset", None))
    return {**preset_values(parser, task or Classification(), preset), **yaml_values}


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
                   task: Optional[Task] = None, **overrides: Any) -> argparse.Namespace:
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
    task = task or Classification()
    parser = build_parser(task=task)
    if isinstance(config, (str, os.PathLike)):
        values: dict[str, Any] = {"config": os.fspath(config)}
    elif isinstance(config, argparse.Namespace):
        values = dict(vars(config))
        values.pop("command", None)
        values.pop("action", None)  # `pedconv <task> train`'s sub-command word
    else:
        values = dict(config or {})
    values.update(overrides)
    args = parser.parse_args([])
    try:
        layer = _yaml_layer(parser, values.pop("config", None), values.get("resume"), values.get("output"))
        given = apply_mapping(parser, values, "train() config")
        preset = given.get("preset", layer.get("preset"))
        for k, v in {**preset_values(parser, task, preset), **layer, **given}.items():
            setattr(args, k, v)
    except ConfigError as e:
        raise TrainOptionsError(str(e)) from None
    validate_args(args, task)
    return args


# ----------------------------------------------------------------------------- the run folder
def _prepare_output(args: argparse.Namespace, env: DistEnv, out: Path, command: str) -> Optional[Path]:
    """Check the run folder and decide the checkpoint to resume from (rank 0 decides, all ranks agree)."""
    decision: tuple[Optional[str], Optional[str]] = (None, None)
    if env.is_main:
        try:
            resume = decide_resume(args, out, command)
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
            if k not in _NOT_SAVED and k not in ("command", "action")}


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


def _load_data(args: argparse.Namespace, env: DistEnv, task: Task) -> DataSpec:
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
class _Parts:
    """The pieces of a training run, built from the options and the dataset by :func:`_assemble`."""

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


def _build_model(args: argparse.Namespace, env: DistEnv, spec: DataSpec, task: Task
                 ) -> tuple[nn.Module, ModelArgs, bool]:
    seed_everything(args.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    try:
        model, margs = task.build_model(args, spec)
        if getattr(args, "init_from", None):
            model = start_from_run(model, margs, args.init_from)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        raise TrainError(str(e)) from None
    model.to(env.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    use_sync_bn = env.distributed and env.device.type == "cuda" and args.sync_bn != "off"
    if use_sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, margs, use_sync_bn


def _assemble(args: argparse.Namespace, env: DistEnv, spec: DataSpec, task: Task) -> _Parts:
    module, margs, use_sync_bn = _build_model(args, env, spec, task)
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
    return _Parts(task, spec, module, margs, use_sync_bn, sampler, loader, val_loader, step,
                  task.input_size(args, spec), optimizer, scheduler, grad_scaler(env.device, args.amp, dtype),
                  dtype, lr, layout)


def _saver(parts: _Parts, args: argparse.Namespace, env: DistEnv, out: Path, config: dict[str, Any]) -> CheckpointSaver:
    return CheckpointSaver(out, parts.module, parts.optimizer, parts.scheduler, parts.scaler, layout=parts.layout,
                           seed=args.seed, config=config, model_args=parts.margs,
                           data=parts.task.data_info(args, parts.spec), env=env, task_state=parts.step)


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
    sums = restore_session(ckpt, env, seed, reporter.warn, parts.step)
    progress.metric = parts.task.best_metric
    saver.repair_best(path, progress)
    reporter.info(f"resumed from {path}: epoch {progress.epoch + 1}, step {progress.batches_done}/"
                  f"{parts.layout.steps_per_epoch} (global step {progress.global_step})")
    return progress, sums


def _wrap_ddp(parts: _Parts, args: argparse.Namespace, env: DistEnv) -> tuple[nn.Module, bool]:
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


def _compiled(model: nn.Module, args: argparse.Namespace) -> nn.Module:
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
                  f"train / {parts.spec.num_val} val images, {start_line_device(env.device, env.world_size)}, global "
                  f"batch {layout.global_batch}, lr {parts.lr:.4g}, {layout.steps_per_epoch} steps/epoch x "
                  f"{args.epochs} epochs" + (", DDP find_unused_parameters" if find_unused else "") + f" -> {out}")
    expected = parts.task.presets.get(getattr(args, "preset", None) or "", {}).get("_pretrained")
    if expected and not getattr(args, "init_from", None) and progress.epoch == 0:
        reporter.info(f"note: no --init-from: training from scratch; the --preset {args.preset} recipe starts from "
                      f"{expected}")


# ----------------------------------------------------------------------------- the epochs
def _epoch_record(parts: _Parts, args: argparse.Namespace, env: DistEnv, epoch: int, global_step: int,
                  sums: EpochSums, started: float, counts_correct: bool) -> dict[str, Any]:
    """Evaluate after an epoch and make its ``metrics.jsonl`` record (sums over every rank):
    the training averages, the task's metrics (:meth:`~pedconv.training.task.Task.evaluate`), speed.

    ``started`` is the epoch's start on the ``time.perf_counter`` clock, earlier by the
    seconds a resumed epoch had run before the interruption.
    """
    loss_s, info_s, correct_s, images_s, seconds_s = all_reduce_sum(
        [sums.loss, sums.infomax, sums.correct, sums.images, sums.seconds], env)
    if env.distributed and not parts.use_sync_bn and args.dist_bn != "none":
        from timm.utils import distribute_bn

        distribute_bn(parts.module, env.world_size, reduce=args.dist_bn == "reduce")
    metrics = dict(parts.evaluate(args, env, final=epoch + 1 == args.epochs))
    speed, val_images = metrics.pop("eval_images_per_s"), metrics.pop("val_images")
    record: dict[str, Any] = {"epoch": epoch + 1, "global_step": global_step,
                              "train_loss": loss_s / max(images_s, 1), "infomax": info_s / max(images_s, 1)}
    if counts_correct:
        record["train_top1"] = 100.0 * correct_s / max(images_s, 1)
    return {
        **record, **metrics, "lr": parts.optimizer.param_groups[0]["lr"],
        "train_images_per_s": images_s / max(seconds_s / env.world_size, 1e-9), "eval_images_per_s": speed,
        "train_images": int(images_s), "val_images": int(val_images), "epoch_time_s": time.perf_counter() - started,
    }


def _stop_now(stop: StopRequests, env: DistEnv) -> bool:
    """Whether any process was asked to stop (agreed over processes, so all stop at the same step)."""
    flag = 1.0 if stop.requested else 0.0
    return (all_reduce_sum([flag], env)[0] if env.distributed else flag) > 0


def _check_finite(trainer: Trainer, progress: RunProgress, out: Path, command: str) -> None:
    """Stop before anything is saved once the loss has been nan/inf (the last good checkpoint stays)."""
    bad = trainer.first_nonfinite_step()
    if bad is None:
        return
    kept = (f"{out / 'last.pt'} still holds the last good state (epoch {progress.epoch}, global step "
            f"{progress.global_step}) and best.pt is untouched" if (out / "last.pt").is_file()
            else "no checkpoint had been written yet")
    raise DivergedError(
        f"training diverged: the loss was nan/inf at global step {bad}; stopped without saving, so {kept}; "
        f"continue with a lower --lr or with --clip-grad ({command} --output {out} --resume auto --lr ...), "
        "or let --skip-nonfinite N ride out rare spikes")


def _interrupted(stop: StopRequests, out: Path, where: str, command: str) -> RunInterrupted:
    signum = stop.signal_number or signal.SIGINT
    return RunInterrupted(f"stopped by {signal.Signals(signum).name} at {where} with {out / 'last.pt'} saved; "
                          f"resume with: {command} --output {out} --resume auto", signum)


def _train_epochs(parts: _Parts, trainer: Trainer, saver: CheckpointSaver, progress: RunProgress, sums: EpochSums,
                  args: argparse.Namespace, env: DistEnv, out: Path, reporter: Reporter, stop: StopRequests) -> None:
    """The remaining epochs: train, evaluate, checkpoint, write the metrics and the curves; stop
    cleanly (after saving) on a signal, and before saving on a non-finite loss."""
    every, steps = args.checkpoint_every_steps, parts.layout.steps_per_epoch
    command = parts.task.train_command

    def on_step(step: int, global_step: int, current: Callable[[], EpochSums]) -> None:
        stopping = step + 1 < steps and _stop_now(stop, env)  # the epoch's last step: stop after its end
        if stopping or (every and global_step % every == 0 and step + 1 < steps):
            _check_finite(trainer, progress, out, command)
            saver.save(replace(progress, batches_done=step + 1, global_step=global_step), current())
        if stopping:
            raise _interrupted(stop, out, f"epoch {progress.epoch + 1}, step {step + 1}/{steps}", command)

    first_epoch = progress.epoch
    for epoch in range(first_epoch, args.epochs):
        resumed = epoch == first_epoch
        started = time.perf_counter() - (sums.seconds if resumed else 0.0)
        epoch_sums, progress.global_step = trainer.train_epoch(
            epoch, progress.batches_done if resumed else 0, progress.global_step, sums if resumed else EpochSums(),
            on_step)
        _check_finite(trainer, progress, out, command)
        record = _epoch_record(parts, args, env, epoch, progress.global_step, epoch_sums, started,
                               trainer.counts_correct)
        is_best = progress.add_epoch(record)
        saver.save(progress, EpochSums(), is_best)
        if env.is_main:
            write_metrics(progress.history, out / "metrics.jsonl")
            plot_curves(progress.history, out / "curves.png", title=f"{args.model} on {parts.spec.name}",
                        metrics=parts.task.curve_metrics)
        reporter.end_epoch(record, parts.task.curve_metrics)
        if epoch + 1 < args.epochs and _stop_now(stop, env):
            raise _interrupted(stop, out, f"the end of epoch {epoch + 1}", command)


def _start(args: argparse.Namespace, env: DistEnv, out: Path, resume_path: Optional[Path], reporter: Reporter,
           task: Task) -> tuple[_Parts, CheckpointSaver, RunProgress, EpochSums, nn.Module, bool]:
    """Build the run's parts and restore a resumed run's state."""
    parts = _assemble(args, env, _load_data(args, env, task), task)
    config = _saved_config(args)
    saver = _saver(parts, args, env, out, config)
    if resume_path is not None:
        try:
            progress, sums = _resume(parts, resume_path, config, env, args.seed, reporter, saver)
        except CheckpointError as e:
            if args.resume != "auto":
                raise
            raise CheckpointError(f"{e}; {resume_hint(out, task.train_command)}") from None
    else:
        progress, sums = RunProgress(metric=task.best_metric), EpochSums()
        seed_everything(mix_seed(args.seed, env.rank))  # per-rank streams (PEDConv sampling, mixup)
    model, find_unused = _wrap_ddp(parts, args, env)
    model = _compiled(model, args)
    _announce(parts, args, env, out, config, progress, find_unused, reporter)
    return parts, saver, progress, sums, model, find_unused


def _write_result(parts: _Parts, progress: RunProgress, out: Path, env: DistEnv) -> Optional[dict[str, Any]]:
    """``result.json``: the task's metrics after the last epoch, by name, and where they come from."""
    if not progress.history:
        return None
    final = progress.history[-1]
    result = {**{k: final[k] for k in parts.task.result_metrics if k in final},
              "model": parts.margs.name, "model_kwargs": parts.margs.kwargs, "num_classes": parts.margs.num_classes,
              "input_size": [parts.margs.input_chans, *parts.input_hw], "data": parts.spec.name,
              "epochs": final["epoch"], "best_metric": progress.metric, "best_value": progress.best_value,
              "best_epoch": progress.best_epoch, "train_images_per_s": final["train_images_per_s"],
              "eval_images_per_s": final["eval_images_per_s"]}
    if env.is_main:
        atomic_write_text(out / "result.json", json.dumps(json_ready(result), indent=2) + "\n")
    return result


def _run(args: argparse.Namespace, env: DistEnv, task: Task) -> dict[str, Any]:
    if args.infomax_weight is None:
        args.infomax_weight = INFOMAX_WEIGHT
    out = output_folder(args)
    args.output = str(out)
    with contextlib.ExitStack() as stack:
        _lock_folder(out, env, stack)
        resume_path = _prepare_output(args, env, out, task.train_command)
        reporter = Reporter(enabled=env.is_main, quiet=args.quiet, log_every=args.log_every, log_file=out / "log.txt")
        parts, saver, progress, sums, model, _ = _start(args, env, out, resume_path, reporter, task)
        trainer = Trainer(model, parts.module, parts.optimizer, parts.scheduler, parts.scaler, parts.loader,
                          parts.sampler, parts.step, env, args, amp_dtype=parts.amp_dtype, reporter=reporter)
        with StopRequests() as stop:
            _train_epochs(parts, trainer, saver, progress, sums, args, env, out, reporter, stop)
        result = _write_result(parts, progress, out, env)
        barrier(env)
    if result is not None:
        reporter.info(f"done: {task.describe(result)} (best {progress.metric} {progress.best_value:.2f} at epoch "
                      f"{progress.best_epoch}) -> {out}")
    return {
        "output_dir": str(out), "final": progress.history[-1] if progress.history else None, "result": result,
        "best_metric": progress.metric, "best_value": progress.best_value,
        **({"best_top1": progress.best_value} if progress.metric == "val_top1" else {}),
        "best_epoch": progress.best_epoch, "history": progress.history,
        "last_checkpoint": str(saver.last), "best_checkpoint": str(saver.best), "lr": parts.lr,
        "global_batch": parts.layout.global_batch, "world_size": env.world_size,
        "model_args": parts.margs.as_dict(), "input_size": [parts.margs.input_chans, *parts.input_hw],
    }


def train(config: Union[str, os.PathLike, Mapping[str, Any], argparse.Namespace, None] = None,
          task: Optional[Task] = None, **overrides: Any) -> dict[str, Any]:
    """Train a model; the programmatic form of ``pedconv train`` (and, with ``task``, of
    ``pedconv <task> train``).

    Args:
        config: a YAML config file, option values keyed by option name (``{"model": ...,
            "epochs": ...}``; a ``"config"`` key names a YAML file), a parsed Namespace, or
            None for defaults.
        task: what to train (default: image classification); :mod:`pedconv.tasks` has the others.
        **overrides: more option values (win over ``config``).

    Returns:
        ``output_dir``, ``final`` (the last epoch's metrics), ``result`` (``result.json``: the
        task's metrics by name), ``best_metric``, ``best_value`` (classification: also
        ``best_top1``), ``best_epoch``,
        ``history`` (all epochs), ``last_checkpoint``, ``best_checkpoint``, ``lr`` (effective),
        ``global_batch``, ``world_size``, ``model_args``, ``input_size`` (``[C, H, W]`` the model sees).

    Raises:
        TrainOptionsError: invalid options; TrainError: a run folder, model or data problem;
        FileNotFoundError: missing dataset; CheckpointError: an unreadable or mismatching checkpoint.

    Example (a real run, so not run as a doctest; tests/training/test_train.py runs it):
        >>> import tempfile
        >>> from pedconv.training.train import train
        >>> out = tempfile.mkdtemp()
        >>> r = train(model="cifar_resnet20", model_kwargs={"width": 8}, epochs=1, train_subset=256,
        ...           val_subset=128, batch_size=64, workers=0, output=out, quiet=True)  # doctest: +SKIP
        >>> sorted(r["final"])[:3], r["output_dir"] == out  # doctest: +SKIP
        (['epoch', 'epoch_time_s', 'eval_images_per_s'], True)
    """
    task = task or Classification()
    args = resolve_config(config, task, **overrides)
    env = init_distributed(args.device)
    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        with _Determinism(args.deterministic, env.device):
            return _run(args, env, task)
    finally:
        torch.set_num_threads(threads)
        cleanup(env)


# ----------------------------------------------------------------------------- the command
def run(args: argparse.Namespace, task: Optional[Task] = None) -> int:
    """``pedconv train`` (or ``task``'s train) on parsed options; errors propagate to
    :func:`pedconv.cli.main`, which prints them.

    A run stopped by SIGINT/SIGTERM (saved, see :mod:`.interruption`) prints the command that
    resumes it and returns 130 / 143; an immediate stop (a second Ctrl-C) returns 130.
    """
    task = task or Classification()
    command = task.train_command
    try:
        train(args, task)
    except RunInterrupted as e:
        print(f"{command}: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        where = f"{command} --output {args.output} --resume auto" if args.output else "the same command"
        print(f"{command}: interrupted; the last checkpoint written is kept: resume with {where}", file=sys.stderr)
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
