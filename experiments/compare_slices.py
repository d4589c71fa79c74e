"""Train a comparison as parallel slices, then merge them: how the full-data study was run.

``pedconv compare`` trains its models x seeds one after another in one process, and locks its
output folder. On a machine with more cores than one run uses (or a GPU that one small run
leaves idle), each ``--models X --seeds k`` slice can run as its own process into its own
folder, and the finished run folders move into the comparison's folder afterwards, where
``pedconv compare ... --report-only`` tabulates them. Nothing here changes a run: each slice is
the ordinary command, resumable as ever.

A slices file has one slice per line, ``TAG <pedconv compare options>`` (``#`` comments);
``experiments/full_study_slices.txt`` is the full-data study's::

    python experiments/compare_slices.py run experiments/full_study_slices.txt --root results/slices --jobs 14
    python experiments/compare_slices.py merge --root results/slices --into results/compare-full \\
        variational-s1 condconv-s1 ...
    pedconv compare --preset full --output results/compare-full --report-only

``run`` starts at most ``--jobs`` slices at a time (one thread each) and, with
``--deadline-s``, interrupts the running ones with SIGINT at the deadline: each saves its
checkpoint, and the same ``run`` command later continues them (finished slices are skipped by
``pedconv compare`` itself). On one GPU, start CUDA MPS first (``nvidia-cuda-mps-control -d``)
so the slices' small kernels run side by side; the study ran 14 slices at a time on an H200.

``merge`` moves every finished run folder (one with ``result.json``) of the named slices to
``<into>/runs/<model>/<seed>``, refuses to replace an existing one, drops the stale lock file,
and rewrites the slice's folder path inside ``args.yaml`` and ``log.txt``. Where each run
trained stays in its ``log.txt`` (``pedconv compare`` times only the runs that trained on the
reference row's devices).

Written here rather than taken from a library: the slices are ``pedconv compare`` processes
with pedconv's own folder layout, and a process pool with a deadline is a few lines.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from pedconv.utils.lock import LOCK_NAME

_REWRITTEN = ("args.yaml", "log.txt")


def read_slices(path: Path) -> list[tuple[str, list[str]]]:
    """``[(tag, compare options)]`` from a slices file; a bad line stops with its number."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such slices file")
    slices = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        tag, options = words[0], words[1:]
        if "/" in tag or "--output" in options or not options:
            raise SystemExit(f"{path}:{number}: expected 'TAG <pedconv compare options>' without --output, "
                             f"got {line.strip()!r}")
        slices.append((tag, options))
    tags = [t for t, _ in slices]
    if len(set(tags)) != len(tags):
        raise SystemExit(f"{path}: a tag appears twice")
    return slices


def run_slices(slices: list[tuple[str, list[str]]], root: Path, jobs: int, deadline_s: Optional[float]) -> int:
    """Run the slices, ``jobs`` at a time; returns how many did not finish."""
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    todo, failed = list(slices), 0
    running: dict[str, subprocess.Popen[bytes]] = {}
    start = time.monotonic()
    stopping = False
    while todo or running:
        late = deadline_s is not None and time.monotonic() - start > deadline_s
        if late and not stopping:
            stopping = True
            print(f"deadline ({deadline_s:.0f} s): interrupting {len(running)} slices; rerun to continue", flush=True)
            for proc in running.values():
                proc.send_signal(signal.SIGINT)
            failed += len(todo)
            todo = []
        while todo and len(running) < jobs:
            tag, options = todo.pop(0)
            cmd = [sys.executable, "-m", "pedconv", "compare", "--output", str(root / tag), *options]
            with open(root / f"{tag}.log", "a") as log:
                running[tag] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        for tag, proc in list(running.items()):
            if proc.poll() is not None:
                del running[tag]
                failed += proc.returncode != 0
                print(f"{tag}: exit {proc.returncode} after {time.monotonic() - start:.0f} s", flush=True)
        time.sleep(1.0)
    return failed


def merge(root: Path, into: Path, tags: list[str]) -> list[Path]:
    """Move the finished run folders of ``tags`` into ``into``; returns where they went."""
    moved = []
    for tag in tags:
        slice_dir = root / tag
        if not slice_dir.is_dir():
            raise SystemExit(f"{slice_dir}: no such slice folder")
        for done in sorted(slice_dir.glob("runs/*/seed*/result.json")):
            source = done.parent
            target = into / source.relative_to(slice_dir)
            if target.exists():
                raise SystemExit(f"{target} exists already: not replaced (move or delete it first)")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))
            (target / LOCK_NAME).unlink(missing_ok=True)
            for name in _REWRITTEN:
                path = target / name
                if path.is_file():
                    path.write_text(path.read_text().replace(f"{slice_dir}/", f"{into}/"))
            moved.append(target)
    return moved


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the slices of a slices file")
    r.add_argument("slices", type=Path)
    r.add_argument("--root", type=Path, required=True, help="each slice trains into ROOT/TAG")
    r.add_argument("--jobs", type=int, default=2, help="slices at a time (default 2)")
    r.add_argument("--deadline-s", type=float, default=None, help="interrupt the running slices after this long")
    m = sub.add_parser("merge", help="move finished runs of slices into a comparison folder")
    m.add_argument("tags", nargs="+")
    m.add_argument("--root", type=Path, required=True)
    m.add_argument("--into", type=Path, required=True)
    args = p.parse_args(argv)
    if args.command == "run":
        if args.jobs < 1:
            p.error(f"--jobs: expected a positive number, got {args.jobs}")
        left = run_slices(read_slices(args.slices), args.root, args.jobs, args.deadline_s)
        print(f"{left} slices not finished" if left else "every slice finished")
        return 1 if left else 0
    for target in merge(args.root, args.into, args.tags):
        print(f"moved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
