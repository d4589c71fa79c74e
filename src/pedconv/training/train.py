"""Training a task's model: the run folder, resume, the epochs, ``result.json``; single process or
``torchrun`` (DDP).

:func:`train` takes the options (:mod:`.config`: defaults < the task's preset < a YAML file <
the given values) and a :class:`~pedconv.training.task.Task`, holds the run folder's lock
(:mod:`.run_folder`), builds the run (:mod:`.assembly`) or resumes it (:mod:`.resume`), and
runs the epochs: the :class:`~pedconv.training.loop.Trainer`'s steps, the task's evaluation,
``last.pt``/``best.pt`` (:mod:`.checkpoint`), ``metrics.jsonl``, ``curves.png`` and ``log.txt``
(:mod:`.run_log`). SIGINT/SIGTERM stop after the step in flight with ``last.pt`` saved
(:mod:`.interruption`); a non-finite loss stops before anything is saved. The commands of the
tasks (``pedconv train``, ``pedconv detect train``, ...) are :func:`run` with their task; the
user's manual is :mod:`pedconv.tasks.classification.command`.
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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn

from ..errors import (
    CheckpointError,
    DivergedError,
    FolderBusyError,
    RunInterrupted,
    TrainError,
    TrainOptionsError,
)
from ..method.infomax import INFOMAX_WEIGHT
from ..tools.flops import count_parameters, parameter_summary
from ..utils.atomic import atomic_write_text
from ..utils.lock import FolderLock
from ..utils.reporting import json_ready
from .assembly import Determinism, RunParts, assemble, compiled, load_data, make_saver, resume_run, wrap_ddp
from .checkpoint import CheckpointSaver
from .config import resolve_config, write_args_yaml
from .data import mix_seed
from .distributed import DistEnv, all_reduce_sum, barrier, broadcast_object, cleanup, init_distributed
from .interruption import StopRequests
from .loop import Trainer
from .run_folder import ARTIFACTS, decide_resume, output_folder, resume_hint, start_line_device
from .run_log import Reporter, plot_curves, write_metrics
from .state import EpochSums, RunProgress, seed_everything
from .task import Task

__all__ = ["ARTIFACTS", "TrainError", "TrainOptionsError", "run", "train"]

_NOT_SAVED = ("config", "resume", "overwrite")


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


def _announce(parts: RunParts, args: argparse.Namespace, env: DistEnv, out: Path, config: dict[str, Any],
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
def _epoch_record(parts: RunParts, args: argparse.Namespace, env: DistEnv, epoch: int, global_step: int,
                  sums: EpochSums, started: float) -> dict[str, Any]:
    """Evaluate after an epoch and make its ``metrics.jsonl`` record (sums over every rank):
    the training averages, the task's metrics (:meth:`~pedconv.training.task.Task.evaluate`), speed.

    ``started`` is the epoch's start on the ``time.perf_counter`` clock, earlier by the
    seconds a resumed epoch had run before the interruption.
    """
    names = sorted(sums.metrics)  # the same on every rank: every step reports the same metrics
    loss_s, info_s, images_s, seconds_s, *metric_s = all_reduce_sum(
        [sums.loss, sums.infomax, sums.images, sums.seconds, *(sums.metrics[k] for k in names)], env)
    if env.distributed and not parts.use_sync_bn and args.dist_bn != "none":
        from timm.utils import distribute_bn

        distribute_bn(parts.module, env.world_size, reduce=args.dist_bn == "reduce")
    metrics = dict(parts.evaluate(args, env, final=epoch + 1 == args.epochs))
    speed, val_images = metrics.pop("eval_images_per_s"), metrics.pop("val_images")
    record: dict[str, Any] = {"epoch": epoch + 1, "global_step": global_step,
                              "train_loss": loss_s / max(images_s, 1), "infomax": info_s / max(images_s, 1)}
    record.update({f"train_{k}": v / max(images_s, 1) for k, v in zip(names, metric_s)})
    return {
        **record, **metrics, "lr": parts.optimizer.param_groups[0]["lr"],
        "train_images_per_s": images_s / max(seconds_s / env.world_size, 1e-9), "eval_images_per_s": speed,
        "train_images": int(images_s), "val_images": int(val_images), "epoch_time_s": time.perf_counter() - started,
        "device": env.device.type,
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


def _train_epochs(parts: RunParts, trainer: Trainer, saver: CheckpointSaver, progress: RunProgress, sums: EpochSums,
                  args: argparse.Namespace, env: DistEnv, out: Path, reporter: Reporter, stop: StopRequests,
                  on_epoch: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
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
        record = _epoch_record(parts, args, env, epoch, progress.global_step, epoch_sums, started)
        is_best = progress.add_epoch(record)
        saver.save(progress, EpochSums(), is_best)
        if env.is_main:
            write_metrics(progress.history, out / "metrics.jsonl")
            plot_curves(progress.history, out / "curves.png", title=f"{args.model} on {parts.spec.name}",
                        metrics=parts.task.curve_metrics)
        reporter.end_epoch(record, parts.task.result_metrics)
        if on_epoch is not None and env.is_main:
            on_epoch(dict(record))
        if epoch + 1 < args.epochs and _stop_now(stop, env):
            raise _interrupted(stop, out, f"the end of epoch {epoch + 1}", command)


def _start(args: argparse.Namespace, env: DistEnv, out: Path, resume_path: Optional[Path], reporter: Reporter,
           task: Task) -> tuple[RunParts, CheckpointSaver, RunProgress, EpochSums, nn.Module, bool]:
    """Build the run's parts and restore a resumed run's state."""
    parts = assemble(args, env, load_data(args, env, task), task, reporter.info)
    config = _saved_config(args)
    saver = make_saver(parts, args, env, out, config)
    if resume_path is not None:
        try:
            progress, sums = resume_run(parts, resume_path, config, env, args.seed, reporter, saver)
        except CheckpointError as e:
            if args.resume != "auto":
                raise
            raise CheckpointError(f"{e}; {resume_hint(out, task.train_command)}") from None
    else:
        progress, sums = RunProgress(metric=task.best_metric), EpochSums()
        seed_everything(mix_seed(args.seed, env.rank))  # per-rank streams (PEDConv sampling, mixup)
    model, find_unused = wrap_ddp(parts, args, env)
    model = compiled(model, args)
    _announce(parts, args, env, out, config, progress, find_unused, reporter)
    return parts, saver, progress, sums, model, find_unused


def _write_result(parts: RunParts, progress: RunProgress, out: Path, env: DistEnv) -> Optional[dict[str, Any]]:
    """``result.json``: the task's metrics after the last epoch, by name, and where they come from."""
    if not progress.history:
        return None
    final = progress.history[-1]
    result = {**{k: final[k] for k in parts.task.result_metrics if k in final},
              "model": parts.margs.name, "model_kwargs": parts.margs.kwargs, "num_classes": parts.margs.num_classes,
              "input_size": [parts.margs.input_chans, *parts.input_hw], "data": parts.spec.name,
              "epochs": final["epoch"], "best_metric": progress.metric, "best_value": progress.best_value,
              "best_epoch": progress.best_epoch, "train_images_per_s": final["train_images_per_s"],
              "eval_images_per_s": final["eval_images_per_s"],
              # where the epochs ran (a resumed run may have moved), as the records say
              "devices": list(dict.fromkeys(str(h["device"]) for h in progress.history if "device" in h))}
    if env.is_main:
        atomic_write_text(out / "result.json", json.dumps(json_ready(result), indent=2) + "\n")
    return result


def _run(args: argparse.Namespace, env: DistEnv, task: Task,
         on_epoch: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
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
            _train_epochs(parts, trainer, saver, progress, sums, args, env, out, reporter, stop, on_epoch)
        result = _write_result(parts, progress, out, env)
        barrier(env)
    if result is not None:
        reporter.info(f"done: {task.describe(result)} (best {progress.metric} {progress.best_value:.2f} at epoch "
                      f"{progress.best_epoch}) -> {out}")
    return {
        "output_dir": str(out), "final": progress.history[-1] if progress.history else None, "result": result,
        "best_metric": progress.metric, "best_value": progress.best_value,
        "best_epoch": progress.best_epoch, "history": progress.history,
        "last_checkpoint": str(saver.last), "best_checkpoint": str(saver.best), "lr": parts.lr,
        "global_batch": parts.layout.global_batch, "world_size": env.world_size,
        "model_args": parts.margs.as_dict(), "input_size": [parts.margs.input_chans, *parts.input_hw],
    }


def train(config: Union[str, os.PathLike, Mapping[str, Any], argparse.Namespace, None],
          task: Task, *, on_epoch: Optional[Callable[[dict[str, Any]], None]] = None, **overrides: Any
          ) -> dict[str, Any]:
    """Train a model for ``task``; the programmatic form of ``pedconv <task> train``
    (:func:`pedconv.tasks.classification.train` is ``pedconv train``'s).

    Args:
        config: a YAML config file, option values keyed by option name (``{"model": ...,
            "epochs": ...}``; a ``"config"`` key names a YAML file), a parsed Namespace, or
            None for defaults.
        task: what to train (a :class:`~pedconv.training.task.Task` of :mod:`pedconv.tasks`).
        on_epoch: called on the main process with each epoch's record (a ``metrics.jsonl``
            line) once it is saved: progress for a caller that runs many trainings.
        **overrides: more option values (win over ``config``).

    Returns:
        ``output_dir``, ``final`` (the last epoch's metrics), ``result`` (``result.json``: the
        task's metrics by name), ``best_metric`` (the task's), ``best_value``, ``best_epoch``,
        ``history`` (all epochs), ``last_checkpoint``, ``best_checkpoint``, ``lr`` (effective),
        ``global_batch``, ``world_size``, ``model_args``, ``input_size`` (``[C, H, W]`` the model sees).

    Raises:
        TrainOptionsError: invalid options; TrainError: a run folder, model or data problem;
        FileNotFoundError: missing dataset; CheckpointError: an unreadable or mismatching checkpoint.

    Example (a real run, so not run as a doctest; tests/training/test_train.py runs it):
        >>> import tempfile
        >>> from pedconv.tasks.classification import Classification
        >>> out = tempfile.mkdtemp()
        >>> r = train(None, Classification(), model="cifar_resnet20", model_kwargs={"width": 8}, epochs=1,
        ...           train_subset=256, val_subset=128, batch_size=64, output=out, quiet=True)  # doctest: +SKIP
        >>> sorted(r["final"])[:3], r["output_dir"] == out  # doctest: +SKIP
        (['epoch', 'epoch_time_s', 'eval_images_per_s'], True)
    """
    args = resolve_config(config, task, **overrides)
    env = init_distributed(args.device)
    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        with Determinism(args.deterministic, env.device):
            return _run(args, env, task, on_epoch)
    finally:
        torch.set_num_threads(threads)
        cleanup(env)


# ----------------------------------------------------------------------------- the command
def run(args: argparse.Namespace, task: Task) -> int:
    """``task``'s train command on parsed options; errors propagate to :func:`pedconv.cli.main`,
    which prints them.

    A run stopped by SIGINT/SIGTERM (saved, see :mod:`.interruption`) prints the command that
    resumes it and returns 130 / 143; an immediate stop (a second Ctrl-C) returns 130.
    """
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
