"""Running a comparison's (model, seed) runs: each a normal run folder, skipped once finished
(its ``result.json`` records the run's identity, checked when it is read back), resumed when
interrupted."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from ..errors import CompareError, RunInterrupted
from ..training.run_folder import run_devices
from ..utils.atomic import atomic_write_text, remove_leftover_temps
from .plan import ModelSpec, Plan, run_config, task_of
from .progress import CompareProgress
from .report import metric_label

__all__ = ["IMAGE_SIZE", "finished_record", "run_all", "run_identity", "run_one", "saved_input_size", "sigterm_raises"]


# The image size of the in-memory datasets when a run has no --img-size.
IMAGE_SIZE = {"fashion_mnist": 28, "cifar10": 32, "cifar100": 32}


def saved_input_size(folder: Path, record: dict[str, Any], data: str) -> list[int]:
    """``[C, H, W]`` of a run whose ``result.json`` predates ``input_size``: from its ``args.yaml``."""
    args_yaml = folder / "args.yaml"
    saved = yaml.safe_load(args_yaml.read_text()) if args_yaml.is_file() else {}
    size = (saved or {}).get("img_size") or IMAGE_SIZE.get(data, 224)
    return [record["model_args"]["input_chans"], size, size]


def run_one(spec: ModelSpec, seed: int, width: Optional[int], recipe: dict[str, Any], extra: list[str],
            folder: Path, quiet: bool, init_from: Optional[Path] = None,
            on_epoch: Optional[Callable[[dict[str, Any]], None]] = None, task: str = "train") -> dict[str, Any]:
    """Train one (model, seed) unless already finished; returns its result record. ``on_epoch``
    gets each epoch's record as the run trains."""
    from ..training.train import train

    done = folder / "result.json"
    remove_leftover_temps(folder, [done.name])  # of a write that was interrupted (train cleans up its own)
    identity = run_identity(spec, seed, width, recipe, extra, init_from)
    record = finished_record(folder, identity, recipe)
    if record is not None:
        return record
    result = train(run_config(spec, seed, width, recipe, extra, folder, quiet, init_from, task), task_of(task),
                   on_epoch=on_epoch)
    record = {
        **(result.get("result") or {}),
        "identity": identity,
        "model": spec.label,
        "seed": seed,
        "final": result["final"],
        "best_metric": result["best_metric"],
        "best_value": result["best_value"],
        "history": result["history"],
        "model_args": result["model_args"],
        "input_size": result["input_size"],
        "devices": (result.get("result") or {}).get("devices") or run_devices(folder),
    }
    atomic_write_text(done, json.dumps(record, indent=1, default=str))
    return record


def run_identity(spec: ModelSpec, seed: int, width: Optional[int], recipe: dict[str, Any], extra: list[str],
              init_from: Optional[Path]) -> dict[str, Any]:
    """What makes a run the one a comparison asks for (saved in its ``result.json``)."""
    identity = {"model": spec.label, "seed": seed, "width": width, "recipe": recipe, "extra": extra}
    if init_from is not None:
        identity["init_from"] = str(init_from)
    return identity


def finished_record(folder: Path, identity: dict[str, Any], recipe: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The record of the finished run in ``folder``, None while it is not finished.

    Raises:
        CompareError: the run there was trained with another recipe.
    """
    done = folder / "result.json"
    try:
        record = json.loads(done.read_text()) if done.is_file() else {}
    except json.JSONDecodeError as e:
        raise CompareError(f"{done}: not valid JSON ({e.msg}); delete it to retrain that run") from None
    # `pedconv train` ends by writing its own result.json (no "identity"): then the run is
    # trained but not yet recorded here, and resuming it just returns its history.
    if "identity" not in record:
        return None
    if record.get("identity") != identity:
        raise CompareError(f"{folder} holds a finished run with a different recipe ({record.get('identity')}); "
                           "use another --output or delete that folder")
    if "input_size" not in record:  # a result.json written before it recorded input_size (classification)
        record["input_size"] = saved_input_size(folder, record, recipe.get("data", ""))
    record.setdefault("devices", run_devices(folder))  # recorded before "devices" existed
    return record


def run_all(plan: Plan, progress: CompareProgress, quiet: bool, jobs: int = 1) -> list[dict[str, Any]]:
    """Every run, in order (finished ones are read back), or ``jobs`` at a time side by side;
    returns their records in the plan's order."""
    if jobs > 1:
        return _run_side_by_side(plan, progress, quiet, jobs)
    records = []
    metric = task_of(plan.task).best_metric
    for index, (spec, seed, folder) in enumerate(plan.runs):
        t0 = time.time()
        cached = (folder / "result.json").is_file()
        with contextlib.nullcontext() if cached else progress.watch(index):
            record = run_one(spec, seed, plan.width, plan.recipe, plan.extra, folder, quiet, plan.init_for(spec),
                             on_epoch=progress.epoch_done, task=plan.task)
        records.append(record)
        progress.run_done(f"  {spec.label:<48} seed {seed}: {metric_label(metric, record['final'][metric])}  "
                          + ("(finished earlier)" if cached else f"({time.time() - t0:.0f} s)"))
    return records


def _report_epoch(queue: Any, index: int, record: dict[str, Any]) -> None:
    """A worker's ``on_epoch``: hand the record to the parent, which shows it."""
    queue.put((index, record))


def _run_in_worker(plan: Plan, index: int, quiet: bool, threads: int, queue: Any) -> dict[str, Any]:
    """One run in a worker process of ``--jobs`` (its own torch threads; its run folder has its own lock)."""
    import torch

    torch.set_num_threads(threads)
    spec, seed, folder = plan.runs[index]
    extra = plan.extra if "--threads" in plan.extra else [*plan.extra, "--threads", str(threads)]
    return run_one(spec, seed, plan.width, plan.recipe, extra, folder, quiet, plan.init_for(spec),
                   on_epoch=functools.partial(_report_epoch, queue, index), task=plan.task)


def _run_side_by_side(plan: Plan, progress: CompareProgress, quiet: bool, jobs: int) -> list[dict[str, Any]]:
    """``--jobs N``: the runs in N worker processes (spawned: no state shared with this one), each
    with ``CPUs / N`` torch threads unless ``--threads`` is among the training options. Epochs
    reach the progress bar through a queue. An interruption lets the workers save and stop (their
    runs resume from ``last.pt``) before it is raised here."""
    import multiprocessing
    import queue as queues
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    records: dict[int, dict[str, Any]] = {}
    metric = task_of(plan.task).best_metric
    with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context) as pool:
        epochs = manager.Queue()
        started = time.time()
        pending = {pool.submit(_run_in_worker, plan, i, quiet, threads, epochs): i for i in range(len(plan.runs))}
        try:
            while pending:
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                with contextlib.suppress(queues.Empty):
                    while True:
                        index, record = epochs.get_nowait()
                        progress.epoch_done(record, index)
                for future in done:
                    index = pending.pop(future)
                    records[index] = future.result()
                    spec, seed, _ = plan.runs[index]
                    value = metric_label(metric, records[index]["final"][metric])
                    progress.run_done(f"  {spec.label:<48} seed {seed}: {value}  ({time.time() - started:.0f} s in)")
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return [records[i] for i in range(len(plan.runs))]


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM stops the comparison as Ctrl-C does (an exception in the main thread), so that it
    also ends with the line that says how to continue. (A `pedconv train` run in progress may
    handle the signal itself: it saves, then raises :class:`~pedconv.errors.RunInterrupted`.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise RunInterrupted("terminated", signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
