"""The run folder of ``pedconv train``: which folder, whose it is, and whether to resume.

Rules, so that a folder's results are never lost silently:

* **One writer.** A run holds :class:`~pedconv.utils.lock.FolderLock` on its folder for as
  long as it runs; a second ``pedconv train`` (or a ``--resume auto`` while the first is
  still going) is refused with a line naming the holder.
* **Results** are :data:`RESULTS` (checkpoints, ``metrics.jsonl``, ``result.json``). A folder
  that holds none -- only what a run writes before its first checkpoint (``args.yaml``,
  ``log.txt``, a lock file, interrupted temporary files) -- is free for a new run: a crash
  before the first checkpoint does not block the identical rerun.
* **A fresh run** never replaces results unless asked (``--overwrite``).
* **``--resume auto``** only ever continues the folder's own run, with the folder's own
  options (its ``args.yaml`` is the layer under the command line). Without ``last.pt`` it
  starts fresh only where there are no results; otherwise it stops and says what can
  continue the run (``--resume <folder>/best.pt``).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Optional

from ..errors import TrainError
from ..utils.atomic import remove_leftover_temps
from ..utils.lock import LOCK_NAME

__all__ = ["ARTIFACTS", "RESULTS", "decide_resume", "output_folder", "previous_args_yaml", "resume_hint", "run_devices",
           "start_line_device"]

ARTIFACTS = ("args.yaml", "metrics.jsonl", "curves.png", "log.txt", "last.pt", "best.pt", "result.json")
"""Every file ``pedconv train`` writes into its folder."""

RESULTS = ("last.pt", "best.pt", "metrics.jsonl", "result.json")
"""The files that hold a run's results: a folder with any of them is never reused silently."""


def start_line_device(device: object, processes: int) -> str:
    """The part of a run's start line in ``log.txt`` that names where it runs; every start and
    resume writes one, so :func:`run_devices` can tell where each part of a run trained.

    >>> start_line_device("cuda:0", 1)
    '1 process(es) on cuda:0'
    """
    return f"{processes} process(es) on {device}"


_START_DEVICE = re.compile(r"\d+ process\(es\) on ([a-z]+)")


def run_devices(folder: Path) -> list[str]:
    """The device types (``cpu``, ``cuda``, ...) the run in ``folder`` trained on, over all its
    starts and resumes, in order of first use; empty without a ``log.txt``. A comparison
    compares training times only between runs that trained on the same devices.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> lines = [f"m: {start_line_device(dev, 1)}, global batch 128" for dev in ("cuda:0", "cpu", "cuda:1")]
    >>> _ = (d / "log.txt").write_text("\\n".join(lines))
    >>> run_devices(d)
    ['cuda', 'cpu']
    """
    log = folder / "log.txt"
    if not log.is_file():
        return []
    return list(dict.fromkeys(_START_DEVICE.findall(log.read_text(errors="replace"))))


def output_folder(args: argparse.Namespace) -> Path:
    """The run folder the options name (``--output``, the resumed checkpoint's folder, or
    ``runs/<model>-<timestamp>``); nothing is created or checked here."""
    if args.output:
        return Path(args.output)
    if args.resume and args.resume != "auto":
        return Path(args.resume).parent
    return Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def previous_args_yaml(resume: Optional[str], output: Optional[str]) -> Optional[Path]:
    """The ``args.yaml`` of the run being continued, if there is one: the folder's with
    ``--resume auto``, the checkpoint's folder's with ``--resume PATH``."""
    if resume == "auto" and output:
        path = Path(output) / "args.yaml"
    elif resume:
        path = Path(resume).parent / "args.yaml"
    else:
        return None
    return path if path.is_file() else None


def _results(out: Path) -> list[str]:
    return [name for name in RESULTS if (out / name).exists()]


def _foreign(out: Path) -> list[str]:
    """Files in ``out`` that no pedconv run writes (a run never writes over those)."""
    ours = {*ARTIFACTS, *RESULTS, LOCK_NAME}
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith("."))


def resume_hint(out: Path, command: str = "pedconv train") -> str:
    """What can continue the run in ``out`` when its ``last.pt`` cannot (a sentence)."""
    if (out / "best.pt").is_file():
        return (f"its best.pt can continue the run from the best epoch: {command} --output {out} "
                f"--resume {out / 'best.pt'}")
    return f"start the run again elsewhere, or pass --overwrite to replace {out}'s results"


def decide_resume(args: argparse.Namespace, out: Path, command: str = "pedconv train") -> Optional[Path]:
    """The checkpoint to resume from (``None``: a fresh run), after checking that nothing
    would be lost; prepares ``out`` for the run. Call it while holding the folder's lock.

    Raises:
        TrainError: the folder is not a folder, or holds results the options would replace
            or cannot continue.
    """
    if out.exists() and not out.is_dir():
        raise TrainError(f"--output {out} exists and is not a folder")
    foreign = _foreign(out)
    if foreign and not args.overwrite:
        listing = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise TrainError(f"output folder {out} holds files that are not a pedconv run's ({listing}); choose another "
                         "--output (or pass --overwrite to write the run's files beside them)")
    resume: Optional[Path] = None
    if args.resume == "auto":
        if (out / "last.pt").is_file():
            resume = out / "last.pt"
        elif _results(out):
            raise TrainError(f"--resume auto: {out} holds a run's results ({', '.join(_results(out))}) but no "
                             f"last.pt to continue from; {resume_hint(out, command)}")
    elif args.resume:
        resume = Path(args.resume)
        if not resume.is_file():
            raise TrainError(f"--resume {resume}: no such checkpoint file")
    elif _results(out) and not args.overwrite:
        raise TrainError(f"output folder {out} holds a run's results ({', '.join(_results(out))}); pass --resume "
                         "auto to continue that run or --overwrite to replace it")
    if resume is None:  # a fresh run: what an earlier run left here goes (results only with --overwrite)
        for name in ARTIFACTS:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    remove_leftover_temps(out, (*ARTIFACTS, LOCK_NAME))  # of writes that were interrupted
    return resume
