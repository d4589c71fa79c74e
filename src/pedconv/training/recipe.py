"""The optimisation recipe from timm's building blocks: optimizer, lr schedule, losses, AMP.

* optimizer: :func:`timm.optim.create_optimizer_v2` (SGD with momentum by default; weight
  decay skipped on biases and normalisation parameters unless ``--wd-norm-bias``);
* schedule: :func:`timm.scheduler.create_scheduler_v2` updated every optimizer step, with a
  linear warm-up; with ``warmup_prefix`` (default) the warm-up comes first and the decay
  (cosine...) spans the remaining ``epochs - warmup_epochs``, so the run lasts ``epochs``;
* losses: :class:`timm.data.Mixup` (mixup/cutmix, which also applies label smoothing) with
  :class:`timm.loss.SoftTargetCrossEntropy`, else
  :class:`timm.loss.LabelSmoothingCrossEntropy`, else cross-entropy;
* the learning rate is scaled with the global batch (``--lr-scale``): ``--lr`` is the value
  for ``--lr-base-batch`` images per optimizer step.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
from typing import Any, Optional

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from ..errors import RunError, UsageError

__all__ = ["SCHEDULES", "autocast", "build_criterion", "build_optimizer", "build_scheduler", "check_optimizer",
           "effective_lr", "grad_scaler"]

SCHEDULES = ("cosine", "step", "multistep", "poly", "tanh")


def effective_lr(lr: float, global_batch: int, base_batch: int = 256, scale: str = "linear") -> float:
    """The learning rate used: ``lr * global_batch / base_batch`` (``linear``), the square root of the ratio, or ``lr``.

    >>> effective_lr(0.1, 512, 256), effective_lr(0.1, 64, 256, "sqrt"), effective_lr(0.1, 64, 256, "none")
    (0.2, 0.05, 0.1)
    """
    if scale == "none":
        return lr
    ratio = global_batch / base_batch
    return lr * (ratio if scale == "linear" else math.sqrt(ratio))


def check_optimizer(name: str) -> None:
    """Raise :class:`~pedconv.errors.UsageError` unless ``name`` is in timm's optimizer registry
    (optionally with timm's ``lookahead_`` prefix); the message suggests close names.

    >>> check_optimizer("lookahead_adamw")
    >>> check_optimizer("adamx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pedconv.errors.UsageError: --opt adamx: unknown optimizer; did you mean 'adamax', 'adam' or 'radam'? ...
    """
    parts = name.lower().split("_")
    known = list_optimizers()
    if parts[-1] in known and (len(parts) == 1 or (len(parts) == 2 and parts[0] == "lookahead")):
        return
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)
    hint = ("did you mean " + " or ".join(", ".join(repr(c) for c in close).rsplit(", ", 1)) + "? ") if close else ""
    raise UsageError(f"--opt {name}: unknown optimizer; {hint}(the names are timm.optim.list_optimizers(), e.g. "
                     "sgd, adamw, lamb)")


def build_optimizer(model: nn.Module, args: argparse.Namespace, lr: float) -> torch.optim.Optimizer:
    """timm optimizer named ``args.opt`` at learning rate ``lr``.

    >>> ns = argparse.Namespace(opt="sgd", weight_decay=1e-4, momentum=0.9, nesterov=True, wd_norm_bias=False)
    >>> opt = build_optimizer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), ns, 0.1)
    >>> [g["weight_decay"] for g in opt.param_groups]
    [0.0, 0.0001]
    >>> ns.wd_skip = ["bn"]  # the authors' rule: only names containing "bn" are exempt
    >>> m = nn.Sequential()
    >>> m.add_module("conv", nn.Conv2d(1, 2, 3)); m.add_module("bn1", nn.BatchNorm2d(2))
    >>> [(g["weight_decay"], len(g["params"])) for g in build_optimizer(m, ns, 0.1).param_groups]
    [(0.0, 2), (0.0001, 2)]
    """
    kwargs: dict[str, Any] = {}
    name = args.opt.lower()
    if name in ("sgd", "nesterov", "momentum"):
        # timm's names: "momentum" is plain momentum, "nesterov" Nesterov; "sgd" follows --nesterov.
        kwargs["nesterov"] = {"momentum": False, "nesterov": True}.get(name, bool(args.nesterov))
        name = "sgd"
    skip = getattr(args, "wd_skip", None)
    if skip:
        return create_optimizer_v2(_decay_groups_by_name(model, skip, args.weight_decay), opt=name, lr=lr,
                                   weight_decay=args.weight_decay, momentum=args.momentum, **kwargs)
    return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=args.weight_decay, momentum=args.momentum,
                               filter_bias_and_bn=not args.wd_norm_bias, **kwargs)


def _decay_groups_by_name(model: nn.Module, skip: list[str], weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: names containing a ``skip`` substring get no weight decay, all others
    do. The authors' rule (their code exempts names containing ``bn``), which timm's
    bias-and-norm filter cannot express: it keys on tensor rank, not on names."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    exempt = [p for n, p in named if any(s in n for s in skip)]
    decayed = [p for n, p in named if not any(s in n for s in skip)]
    return [{"params": exempt, "weight_decay": 0.0}, {"params": decayed, "weight_decay": weight_decay}]


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, steps_per_epoch: int) -> Scheduler:
    """Per-step timm scheduler over ``args.epochs`` epochs of ``steps_per_epoch`` optimizer steps.

    >>> ns = argparse.Namespace(sched="cosine", epochs=2, warmup_epochs=1, warmup_lr=0.0, warmup_prefix=True,
    ...                         min_lr=0.0, decay_epochs=30, decay_milestones=[30], decay_rate=0.1, poly_power=0.9)
    >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> s = build_scheduler(opt, ns, 4)
    >>> [round(s._get_lr(t)[0], 3) for t in range(9)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    warmup = float(args.warmup_epochs)
    # With the prefix, timm counts the decay after the warm-up: shorten it so that the run lasts `epochs`.
    decay_epochs_total = max(args.epochs - warmup, 1.0 / steps_per_epoch) if args.warmup_prefix else float(args.epochs)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=args.sched,
        # fractional epochs are fine: timm multiplies them by updates_per_epoch
        num_epochs=decay_epochs_total,  # type: ignore[arg-type]
        decay_epochs=args.decay_epochs,
        decay_milestones=list(args.decay_milestones),
        # timm reads decay_rate as the poly schedule's power: the step factor must not leak into it
        decay_rate=args.poly_power if args.sched == "poly" else args.decay_rate,
        min_lr=args.min_lr,
        warmup_lr=args.warmup_lr,
        warmup_epochs=warmup,  # type: ignore[arg-type]
        warmup_prefix=bool(args.warmup_prefix),
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    scheduler.step_update(0)
    return scheduler


def build_criterion(args: argparse.Namespace, num_classes: int) -> tuple[Optional[Mixup], nn.Module]:
    """``(mixup_fn or None, training loss)``; evaluation always uses plain cross-entropy.

    >>> ns = argparse.Namespace(mixup=0.2, cutmix=0.0, smoothing=0.1, mixup_prob=1.0, mixup_switch_prob=0.5,
    ...                         mixup_mode="batch")
    >>> mix, loss = build_criterion(ns, 10); type(loss).__name__
    'SoftTargetCrossEntropy'
    """
    if args.mixup > 0 or args.cutmix > 0:
        mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                      switch_prob=args.mixup_switch_prob, mode=args.mixup_mode, label_smoothing=args.smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if args.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return None, nn.CrossEntropyLoss()


def amp_dtype(device: torch.device, requested: Optional[str]) -> torch.dtype:
    """bfloat16 on CPU; float16 (default) or bfloat16 on CUDA.

    >>> amp_dtype(torch.device("cpu"), None)
    torch.bfloat16
    """
    if requested is None:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[requested]
    if device.type == "cpu" and dtype == torch.float16:
        raise RunError("--amp-dtype float16 is not supported on CPU; use bfloat16")
    return dtype


def autocast(device: torch.device, enabled: bool, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the device, or a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool, dtype: Optional[torch.dtype]) -> torch.amp.GradScaler:
    """A GradScaler that is active only for float16 autocast on CUDA (bfloat16 needs none)."""
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu",
                                enabled=bool(enabled and device.type == "cuda" and dtype == torch.float16))
