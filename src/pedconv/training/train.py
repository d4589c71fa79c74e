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
(best validation top-1), written atomically. A non-empty folder is not reused without
``--resume`` or ``--overwrite``.

Resuming (``--resume auto|PATH``) restores the model, the optimizer state, the GradScaler,
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
import copy
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.utils.data import DataLoader

from ..method.infomax import INFOMAX_WEIGHT, infomax_loss
from ..models import model_entrypoint
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_copy,
    atomic_save,
    capture_rng_state,
    check_model_compatible,
    load_training_checkpoint,
    restore_rng_state,
)
from .config import ConfigError, apply_mapping, build_train_parser, load_yaml_config, parse_with_config
from .data import BatchPreprocessor, DataSpec, GlobalBatchSampler, ShardBatchSampler, build_data, mix_seed
from .distributed import (
    DistEnv,
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
)
from .loop import EpochSums, Trainer, evaluate
from .model import build_model, dynamic_temperature_modules
from .recipe import (
    amp_dtype,
    build_criterion,
    build_optimizer,
    build_scheduler,
    effective_lr,
    grad_scaler,
)
from .report import Reporter, plot_curves, write_metrics

__all__ = ["ARTIFACTS", "TrainError", "build_parser", "main", "parse_args", "resolve_config", "train"]

ARTIFACTS = ("args.yaml", "metrics.jsonl", "curves.png", "log.txt", "last.pt", "best.pt")
# Options that do not change what is computed: they may differ between a run and its resumption.
_RUNTIME_KEYS = {"config", "output", "resume", "overwrite", "quiet", "log_every", "workers", "threads",
                 "checkpoint_every_steps", "device", "data_dir", "download", "val_batch_size"}
_NOT_SAVED = ("config", "resume", "overwrite")


class TrainError(ValueError):
    """A configuration or run-folder problem, reported without a traceback by the CLI."""


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv train`` argument parser (also used as ``pedconv train`` sub-command).

    >>> build_parser().parse_args(["--epochs", "2"]).epochs
    2
    """
    p = build_train_parser(parser)
    if p.description is None or p.description == "Train a registered model.":
        p.description = __doc__
        p.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


def _validate(args: argparse.Namespace) -> argparse.Namespace:
    try:
        model_entrypoint(args.model)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if (args.mixup > 0 or args.cutmix > 0) and args.batch_size % 2:
        raise TrainError(f"mixup/cutmix need an even --batch-size (timm Mixup pairs samples), got {args.batch_size}")
    if args.resume == "auto" and args.output is None:
        raise TrainError("--resume auto needs --output DIR (the run folder to continue)")
    if args.resume not in (None, "auto") and not Path(args.resume).is_file():
        raise TrainError(f"--resume {args.resume}: no such checkpoint file")
    if args.warmup_epochs > args.epochs:
        raise TrainError(f"--warmup-epochs {args.warmup_epochs} is longer than --epochs {args.epochs}")
    if args.workers is not None and args.workers < 0:
        raise TrainError(f"--workers must be >= 0, got {args.workers}")
    if not isinstance(args.model_kwargs, dict):
        raise TrainError(f"model_kwargs must be a mapping, got {args.model_kwargs!r}")
    return args


def _previous_args_yaml(resume: Optional[str], output: Optional[str]) -> Optional[Path]:
    """The ``args.yaml`` of the run being resumed, if any (used as the config layer when no --config is given)."""
    if resume == "auto" and output:
        path = Path(output) / "args.yaml"
    elif resume and resume != "auto":
        path = Path(resume).parent / "args.yaml"
    else:
        return None
    return path if path.is_file() and (path.parent / "last.pt").is_file() else None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line (``--config`` YAML < flags) and validate it; usage errors exit with status 2.

    When resuming (``--resume``) without ``--config``, the resumed run's ``args.yaml`` is the
    YAML layer, so ``pedconv train --output DIR --resume auto`` continues with the same options.

    >>> parse_args(["--model", "cifar_resnet20", "--lr", "0.2"]).lr
    0.2
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--config", "--resume", "--output"):
        pre.add_argument(flag, default=None)
    known, _ = pre.parse_known_args(argv)
    previous = _previous_args_yaml(known.resume, known.output) if known.config is None else None
    if previous is not None:
        argv = ["--config", str(previous), *argv]
    args = parse_with_config(parser, argv)
    if previous is not None:
        args.config = None
    try:
        return _validate(args)
    except TrainError as e:
        parser.error(str(e))
        raise  # unreachable: parser.error exits


def resolve_config(config: Union[str, os.PathLike, Mapping[str, Any], argparse.Namespace, None] = None,
                   **overrides: Any) -> argparse.Namespace:
    """Options from a YAML file path, a mapping (option names as keys; a ``config`` key names a
    YAML file), a Namespace, or defaults.

    Precedence: defaults < ``config["config"]`` YAML (when resuming without one: the run's
    ``args.yaml``) < the other keys of ``config`` < ``overrides``.

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
        values.pop("func", None)
    else:
        values = dict(config or {})
    values.update(overrides)
    if not values.get("config"):
        previous = _previous_args_yaml(values.get("resume"), values.get("output"))
        if previous is not None:
            values["config"] = str(previous)
    args = parser.parse_args([])
    try:
        yaml_path = values.pop("config", None)
        if yaml_path:
            for k, v in load_yaml_config(yaml_path, parser).items():
                setattr(args, k, v)
        for k, v in apply_mapping(parser, values, "train() config").items():
            setattr(args, k, v)
    except ConfigError as e:
        raise TrainError(str(e)) from None
    return _validate(args)


# ----------------------------------------------------------------------------- set-up helpers
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _prepare_output(args: argparse.Namespace, env: DistEnv) -> tuple[Path, Optional[Path]]:
    """Decide the run folder and the checkpoint to resume from (rank 0 decides, all ranks agree)."""
    decision: tuple[Optional[str], Optional[str], Optional[str]] = (None, None, None)
    if env.is_main:
        try:
            out, resume = _decide_output(args)
            decision = (str(out), None if resume is None else str(resume), None)
        except (TrainError, FileNotFoundError) as e:
            decision = (None, None, str(e))
    out_s, resume_s, error = broadcast_object(decision, env)
    if error is not None:
        raise TrainError(error)
    return Path(out_s), None if resume_s is None else Path(resume_s)  # type: ignore[arg-type]


def _decide_output(args: argparse.Namespace) -> tuple[Path, Optional[Path]]:
    resume: Optional[Path] = None
    if args.resume == "auto":
        out = Path(args.output)
        resume = out / "last.pt" if (out / "last.pt").is_file() else None
    elif args.resume:
        resume = Path(args.resume)
        if not resume.is_file():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint file")
        out = Path(args.output) if args.output else resume.parent
    else:
        out = Path(args.output) if args.output else Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        if out.exists() and not out.is_dir():
            raise TrainError(f"--output {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not args.overwrite:
            names = sorted(p.name for p in out.iterdir())
            listing = ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")
            raise TrainError(f"output folder {out} is not empty ({listing}); pass --resume auto to continue that run "
                             f"or --overwrite to replace it")
    if resume is None:  # a fresh run: remove a previous run's files (with --overwrite or --resume auto)
        for name in ARTIFACTS:
            (out / name).unlink(missing_ok=True)
    if out.is_dir():  # temporary files of a write that was interrupted (see atomic_save)
        for name in ARTIFACTS:
            for tmp in out.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out, resume


def _saved_config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else copy.deepcopy(v)) for k, v in vars(args).items()
            if k not in _NOT_SAVED and k not in ("command", "func")}


def _write_args_yaml(config: Mapping[str, Any], path: Path, info: Mapping[str, Any]) -> None:
    header = ("# pedconv train: resolved options of this run (usable as --config).\n"
              + "".join(f"# {k}: {v}\n" for k, v in info.items()))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(dict(config), sort_keys=True))
    os.replace(tmp, path)


def _needs_find_unused(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, weight: float) -> bool:
    """One forward/backward of a copy (RNG forked): do all trainable parameters receive a gradient?"""
    probe = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        out = probe(torch.zeros(input_shape, device=device))
        loss = out.float().sum()
        if weight:
            loss = loss + weight * infomax_loss(probe)
        loss.backward()
    return any(p.requires_grad and p.grad is None for p in probe.parameters())


def _restore_session(ckpt: Mapping[str, Any], env: DistEnv, reporter: Reporter, seed: int) -> EpochSums:
    """This rank's RNG state and epoch sums from a checkpoint (re-seeded if the process count changed)."""
    ranks = ckpt["rng"]
    if len(ranks) == env.world_size:
        restore_rng_state(ranks[env.rank]["rng"])
        return EpochSums.from_dict(ranks[env.rank]["sums"])
    reporter.warn(f"the checkpoint was written by {len(ranks)} processes, this run has {env.world_size}: RNG "
                  "streams are re-seeded, so the run will not reproduce an uninterrupted one exactly")
    _seed_everything(mix_seed(seed, env.rank, ckpt["global_step"]))
    if not env.is_main:
        return EpochSums()
    total = EpochSums()
    for r in ranks:
        s = EpochSums.from_dict(r["sums"])
        total = EpochSums(total.loss + s.loss, total.infomax + s.infomax, total.correct + s.correct,
                          total.images + s.images, max(total.steps, s.steps), max(total.seconds, s.seconds))
    return total


# ----------------------------------------------------------------------------- the run
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
        ``global_batch``, ``world_size``, ``model_args``.

    Raises:
        TrainError: invalid options or run folder; FileNotFoundError: missing dataset;
        CheckpointError: an unreadable or mismatching checkpoint.

    Example:
        >>> from pedconv.train import train
        >>> r = train(model="cifar_resnet20", model_kwargs={"width": 8}, epochs=1,
        ...           train_subset=512, val_subset=256, batch_size=64, output="/tmp/r", overwrite=True,
        ...           quiet=True)  # doctest: +SKIP
        >>> sorted(r["final"])[:3], r["output_dir"]  # doctest: +SKIP
        (['epoch', 'epoch_time_s', 'eval_images_per_s'], '/tmp/r')
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


def _run(args: argparse.Namespace, env: DistEnv) -> dict[str, Any]:
    device = env.device
    if args.infomax_weight is None:
        args.infomax_weight = INFOMAX_WEIGHT
    out, resume_path = _prepare_output(args, env)
    args.output = str(out)
    reporter = Reporter(enabled=env.is_main, quiet=args.quiet, log_every=args.log_every, log_file=out / "log.txt")

    spec = _load_data(args, env)
    _seed_everything(args.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    try:
        model, margs = build_model(args.model, spec.num_classes, spec.in_chans, args.model_kwargs)
    except ValueError as e:
        raise TrainError(str(e)) from None
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    module = model
    use_sync_bn = env.distributed and device.type == "cuda" and args.sync_bn != "off"
    if use_sync_bn:
        module = model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    accum = args.grad_accum_steps
    sampler = GlobalBatchSampler(spec.num_train, args.batch_size, env.world_size, env.rank, accum, seed=args.seed,
                                 shuffle=True, with_seeds=not spec.in_memory)
    workers = args.workers if args.workers is not None else (0 if spec.in_memory else min(8, os.cpu_count() or 1))
    loader_kw: dict[str, Any] = dict(num_workers=workers, pin_memory=device.type == "cuda",
                                     persistent_workers=workers > 0)
    if spec.collate_fn is not None:
        loader_kw["collate_fn"] = spec.collate_fn
    # A generator of its own keeps the loaders from drawing on the global torch RNG.
    loader = DataLoader(spec.train, batch_sampler=sampler, generator=torch.Generator().manual_seed(args.seed),
                        **loader_kw)
    val_bs = args.val_batch_size or 2 * args.batch_size
    val_loader = DataLoader(spec.val, batch_sampler=ShardBatchSampler(spec.num_val, val_bs, env.world_size, env.rank),
                            generator=torch.Generator().manual_seed(args.seed), **loader_kw)
    size = (args.img_size, args.img_size) if (args.img_size and spec.in_memory) else None
    input_hw = size or spec.input_size
    out_chans = margs.input_chans if margs.input_chans != spec.in_chans else None
    train_pre = BatchPreprocessor(spec.mean, spec.std, augment=args.augment and spec.augment_on_device, size=size,
                                  out_chans=out_chans, channels_last=args.channels_last)
    val_pre = BatchPreprocessor(spec.mean, spec.std, size=size, out_chans=out_chans, channels_last=args.channels_last)

    global_batch = args.batch_size * env.world_size * accum
    lr = effective_lr(args.lr, global_batch, args.lr_base_batch, args.lr_scale)
    optimizer = build_optimizer(module, args, lr)
    steps_per_epoch = sampler.steps_per_epoch
    scheduler = build_scheduler(optimizer, args, steps_per_epoch)
    try:
        dtype = amp_dtype(device, args.amp_dtype) if args.amp else None
    except ValueError as e:
        raise TrainError(str(e)) from None
    scaler = grad_scaler(device, args.amp, dtype)
    mixup, criterion = build_criterion(args, spec.num_classes)

    config = _saved_config(args)
    epoch, batches_done, global_step = 0, 0, 0
    history: list[dict[str, Any]] = []
    best_top1: Optional[float] = None
    best_epoch: Optional[int] = None
    sums = EpochSums()
    if resume_path is not None:
        ckpt = None
        if env.is_main:
            try:
                ckpt = load_training_checkpoint(resume_path)
            except (CheckpointError, FileNotFoundError) as e:
                ckpt = {"__error__": str(e)}
        ckpt = broadcast_object(ckpt, env)
        if "__error__" in ckpt:
            raise CheckpointError(ckpt["__error__"])
        check_model_compatible(ckpt, config, resume_path, module)
        if ckpt.get("global_batch") != global_batch or ckpt.get("steps_per_epoch") != steps_per_epoch:
            raise CheckpointError(
                f"checkpoint {resume_path} does not match this run: it was written with a global batch of "
                f"{ckpt.get('global_batch')} ({ckpt.get('steps_per_epoch')} steps per epoch), this run has "
                f"{global_batch} ({steps_per_epoch}); keep batch_size x processes x grad_accum_steps and the "
                f"training subset unchanged to resume")
        changed = sorted(k for k in set(config) | set(ckpt["config"])
                         if k not in _RUNTIME_KEYS and config.get(k) != ckpt["config"].get(k))
        if changed:
            reporter.warn("resuming with options that differ from the checkpoint's (they apply from here on): "
                          + ", ".join(f"{k} {ckpt['config'].get(k)!r} -> {config.get(k)!r}" for k in changed))
        module.load_state_dict(ckpt["model"])
        # Momentum buffers come from the checkpoint; hyper-parameters (lr, weight decay, momentum)
        # from the options of this run, so a changed option takes effect.
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as e:
            raise CheckpointError(f"checkpoint {resume_path}: optimizer state does not fit this run ({e})") from None
        for group, values in zip(optimizer.param_groups, hyper):
            group.update(values)
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        epoch, batches_done, global_step = ckpt["epoch"], ckpt["batches_done"], ckpt["global_step"]
        history = list(ckpt["history"])
        best_top1, best_epoch = ckpt.get("best_top1"), ckpt.get("best_epoch")
        # The per-step schedule is a function of the options and the step count: recomputed, not loaded.
        scheduler.step_update(num_updates=global_step)
        sums = _restore_session(ckpt, env, reporter, args.seed)
        is_best_file = resume_path.resolve() == (out / "best.pt").resolve()
        if env.is_main and best_epoch == epoch and batches_done == 0 and not is_best_file:
            # This checkpoint is the best one: (re)write best.pt in case the run stopped between the two writes.
            atomic_copy(resume_path, out / "best.pt")
        reporter.info(f"resumed from {resume_path}: epoch {epoch + 1}, step {batches_done}/{steps_per_epoch} "
                      f"(global step {global_step})")
        del ckpt
    else:
        _seed_everything(mix_seed(args.seed, env.rank))  # per-rank streams (PEDConv sampling, mixup)

    ddp_model: nn.Module = model
    find_unused = False
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if args.find_unused_parameters == "auto":
            find_unused = _needs_find_unused(module, (2, margs.input_chans, *input_hw), device, args.infomax_weight)
        else:
            find_unused = args.find_unused_parameters == "on"
        ddp_model = DDP(model, device_ids=[device] if device.type == "cuda" else None,
                        find_unused_parameters=find_unused)

    info = {"processes": env.world_size, "device": str(device), "global_batch": global_batch, "effective_lr": lr,
            "steps_per_epoch": steps_per_epoch, "train_images": spec.num_train, "val_images": spec.num_val,
            "model_args": margs.as_dict(), "torch": str(torch.__version__)}
    if env.is_main:
        _write_args_yaml(config, out / "args.yaml", info)
        if history:
            write_metrics(history, out / "metrics.jsonl")
    params = sum(p.numel() for p in module.parameters())
    reporter.info(f"{args.model}: {params / 1e6:.3f}M parameters, {spec.name} {spec.num_train} train / "
                  f"{spec.num_val} val images, {env.world_size} process(es) on {device}, global batch "
                  f"{global_batch}, lr {lr:.4g}, {steps_per_epoch} steps/epoch x {args.epochs} epochs"
                  + (", DDP find_unused_parameters" if find_unused else "") + f" -> {out}")

    trainer = Trainer(ddp_model, module, optimizer, scheduler, scaler, loader, sampler, train_pre, mixup, criterion,
                      env, args, amp_dtype=dtype, augment_on_device=spec.augment_on_device, reporter=reporter)

    def save(epoch_: int, batches_done_: int, global_step_: int, sums_: EpochSums, is_best: bool = False) -> None:
        ranks = all_gather_object({"rng": capture_rng_state(), "sums": sums_.as_dict()}, env)
        if not env.is_main:
            return
        temps = [m.temperature for m in dynamic_temperature_modules(module)]
        ckpt = {
            "format": CHECKPOINT_FORMAT, "model": module.state_dict(), "model_args": margs.as_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "epoch": epoch_, "batches_done": batches_done_, "global_step": global_step_,
            "steps_per_epoch": steps_per_epoch, "global_batch": global_batch, "world_size": env.world_size,
            "rng": ranks, "history": history,
            # The data order is a function of these: the sampler needs no other state.
            "sampler": {"seed": args.seed, "epoch": epoch_, "start_step": batches_done_, "global_batch": global_batch,
                        "num_samples": sampler.num_samples}, "best_top1": best_top1, "best_epoch": best_epoch,
            "config": config, "dyconv_temperature": temps[0] if temps else None,
            "data": {"name": spec.name, "num_classes": spec.num_classes, "in_chans": spec.in_chans,
                     "input_size": list(input_hw), "mean": list(spec.mean), "std": list(spec.std)},
            "pedconv_version": _version(), "torch_version": str(torch.__version__),
        }
        atomic_save(ckpt, out / "last.pt")
        if is_best:
            atomic_copy(out / "last.pt", out / "best.pt")

    every = args.checkpoint_every_steps
    first_epoch = epoch
    for epoch in range(first_epoch, args.epochs):
        start_step = batches_done if epoch == first_epoch else 0
        epoch_sums = sums if epoch == first_epoch else EpochSums()
        t0 = time.perf_counter()

        def on_step(step: int, gstep: int, current: Callable[[], EpochSums], epoch: int = epoch) -> None:
            if every and gstep % every == 0 and step + 1 < steps_per_epoch:
                save(epoch, step + 1, gstep, current())

        epoch_sums, global_step = trainer.train_epoch(epoch, start_step, global_step, epoch_sums, on_step)
        loss_s, info_s, correct_s, images_s, seconds_s = all_reduce_sum(
            [epoch_sums.loss, epoch_sums.infomax, epoch_sums.correct, epoch_sums.images, epoch_sums.seconds], env)
        if env.distributed and not use_sync_bn and args.dist_bn != "none":
            from timm.utils import distribute_bn

            distribute_bn(module, env.world_size, reduce=args.dist_bn == "reduce")
        metrics = evaluate(module, val_loader, val_pre, env, args.amp, dtype)
        record = {
            "epoch": epoch + 1, "global_step": global_step,
            "train_loss": loss_s / max(images_s, 1), "infomax": info_s / max(images_s, 1),
            "train_top1": 100.0 * correct_s / max(images_s, 1),
            "val_loss": metrics["val_loss"], "val_top1": metrics["val_top1"], "val_top5": metrics["val_top5"],
            "lr": optimizer.param_groups[0]["lr"],
            "train_images_per_s": images_s / max(seconds_s / env.world_size, 1e-9),
            "eval_images_per_s": metrics["eval_images_per_s"],
            "train_images": int(images_s), "val_images": int(metrics["val_images"]),
            "epoch_time_s": time.perf_counter() - t0 + (sums.seconds if epoch == first_epoch else 0.0),
        }
        history.append(record)
        is_best = best_top1 is None or record["val_top1"] > best_top1
        if is_best:
            best_top1, best_epoch = record["val_top1"], epoch + 1
        save(epoch + 1, 0, global_step, EpochSums(), is_best)
        if env.is_main:
            write_metrics(history, out / "metrics.jsonl")
            plot_curves(history, out / "curves.png", title=f"{args.model} on {spec.name}")
        reporter.end_epoch(record)
    barrier(env)
    if history:
        reporter.info(f"done: val top-1 {history[-1]['val_top1']:.2f}% (best {best_top1:.2f}% at epoch {best_epoch}) "
                      f"-> {out}")
    return {
        "output_dir": str(out), "final": history[-1] if history else None, "best_top1": best_top1,
        "best_epoch": best_epoch, "history": history, "last_checkpoint": str(out / "last.pt"),
        "best_checkpoint": str(out / "best.pt"), "lr": lr, "global_batch": global_batch,
        "world_size": env.world_size, "model_args": margs.as_dict(),
    }


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: Optional[Sequence[str]] = None, args: Optional[argparse.Namespace] = None) -> int:
    """``pedconv train`` entry point: returns the exit status (0 ok, 1 error, 2 usage error).

    >>> main(["--model", "resnet_20"])  # doctest: +SKIP
    usage: ...
    pedconv train: error: unknown model 'resnet_20'; did you mean 'resnet50', ...
    """
    if args is None:
        args = parse_args(argv)
    else:
        try:
            _validate(args)
        except TrainError as e:
            print(f"pedconv train: error: {e}", file=sys.stderr)
            return 2
    try:
        train(args)
    except (TrainError, CheckpointError, ConfigError, FileNotFoundError) as e:
        print(f"pedconv train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pedconv train: interrupted (resume with --resume auto --output DIR)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
