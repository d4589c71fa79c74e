"""``pedconv compare``: train several models with one recipe over several seeds, and tabulate.

The default is the project's main job: static, PEDConv, CondConv, DY-Conv, ODConv and DCD
versions of a CIFAR-style ResNet-20 on real Fashion-MNIST (offline); it takes about 14 minutes on
the 2-core CPU this project is built on (the docs' results page). ``--quick`` is a smoke version
(< 2 minutes); ``--preset study`` is the
converged comparison and ``--preset ablations`` the paper's ablations at this scale (each
about an hour on a 2-core CPU; both resumable).

Models are given as specs ``NAME[:key=value[:key=value...]]``; the key/values (YAML values)
go to the model builder, e.g. ``pedconv_cifar_resnet20:rank=4`` or
``pedconv_cifar_resnet20:components=[gamma]``. Options after ``--`` are passed to every
``pedconv train`` run (e.g. ``-- --amp --weight-decay 1e-4``).

``--task detect|segment|adv`` compares the static and PEDConv models of another task the same
way, each run with the task's own preset (``--quick`` by default, 3 seeds), and tabulates the
task's metric (AP, mIoU, PGD-10 accuracy): ``pedconv compare --task segment --quick``.

Every run lives in ``<output>/runs/<spec>/seed<k>/`` (a normal ``pedconv train`` folder) and
is finished when its ``result.json`` exists. Re-running the same command skips finished runs
and resumes interrupted ones from their last checkpoint, so a long study can be stopped and
continued at any time. The table (params, FLOPs from :func:`pedconv.profile_model`, top-1
mean ± std over seeds, train and eval images/s) is written as ``compare.md``,
``compare.json`` and ``compare.png``. ``--report-only`` rewrites them from the finished runs
alone (a study trained in slices, some of its runs still to come), training nothing.

While it runs, a bar across all runs (a terminal) or one line per trained epoch (a log)
shows the run, its epoch and the time left. One comparison writes a folder at a time (a
second one on the same ``--output`` is refused, naming the first). Ctrl-C or SIGTERM stops
it with one line that names the interrupted run and the command that continues it
(exit status 130 / 143).
"""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from ..errors import RunInterrupted, TrainOptionsError, UsageError
from ..tasks.classification.data import DATASETS
from ..utils.atomic import remove_leftover_temps
from ..utils.lock import FolderLock
from ..utils.options import check_output_folder, non_negative_int, positive, positive_int
from .plan import TASKS, Plan, make_plan, run_config, task_of
from .presets import PRESETS
from .progress import CompareProgress
from .report import REPORTS, report_meta, summarize, write_reports
from .runner import finished_record, run_all, run_identity, sigterm_raises

__all__ = ["build_parser", "main", "run", "run_compare", "validate_args"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv compare`` options, added to ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--quick", "--", "--amp"]).train_options
    ['--', '--amp']
    """
    p = parser or argparse.ArgumentParser(prog="pedconv compare", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="train",
                   help="what the models are trained for: train (classification; the presets below), detect, "
                        "segment or adv (their static and PEDConv models, each with the task's own --preset, "
                        "default quick, 3 seeds)")
    p.add_argument("--preset", default=None, metavar="NAME|YAML",
                   help="--task train: a study file (configs/studies/*.yaml has the shipped ones) or the name of a "
                        "shipped one, " + ", ".join(sorted(PRESETS)) + " (default: the main job, ~14 min on 2 "
                        "cores; quick: smoke, <2 min; study, ablations: ~1 h each; full, full-sweep: the "
                        "converged full-data study, hours, in parts; finetune-base then finetune: fine-tuning "
                        "pretrained static networks). Another task: one of its presets (default quick)")
    p.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    p.add_argument("--models", nargs="+", default=None, metavar="SPEC", help="NAME[:key=value...] (default: preset's)")
    p.add_argument("--seeds", nargs="+", type=non_negative_int, default=None, help="default: preset's")
    p.add_argument("--width", type=positive_int, default=None,
                   help="base width passed to every model (default: preset's)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: preset's")
    p.add_argument("--train-subset", type=positive_int, default=None, help="default: preset's")
    p.add_argument("--val-subset", type=positive_int, default=None, help="default: preset's")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: preset's")
    p.add_argument("--lr", type=positive, default=None, help="lr per 256 images (default: preset's)")
    p.add_argument("--init-from", type=Path, default=None, metavar="COMPARISON",
                   help="start every run of seed k from seed k's trained run in this comparison folder (which "
                        "holds one model): fine-tuning (default: the preset's; finetune: runs/compare-finetune-base)")
    p.add_argument("--init-models", nargs="+", default=None, metavar="SPEC",
                   help="with --init-from holding several models: the one each --models entry starts from, in "
                        "order (the paper's protocol: --task detect --init-from results/transfer-pretrain "
                        "--init-models resnet18 pedconv_resnet18)")
    p.add_argument("--data", choices=DATASETS, default=None,
                   help="dataset of train and adv (default fashion_mnist: offline)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", type=Path, default=None,
                   help="default: runs/compare-<preset> (the published tables: results/compare-<preset>)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="runs trained side by side, in worker processes sharing the CPUs (each its own run "
                        "folder and lock; timings then share the machine)")
    p.add_argument("--verbose", action="store_true", help="show each run's progress")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite the reports from the finished runs in --output of these models "
                        "(and --seeds; default: every seed there), naming the runs left out")
    p.add_argument("train_options", nargs=argparse.REMAINDER,
                   help="after `--`: more `pedconv train` options for every run")
    return p


def validate_args(args: argparse.Namespace) -> None:
    """Refuse, before any run starts, a comparison that cannot work: bad or repeated model specs
    and `pedconv train` options that fail for its runs (:class:`~pedconv.errors.UsageError`), or a
    device or output folder this machine does not have (:class:`~pedconv.errors.RunError`).

    >>> validate_args(build_parser().parse_args(["--batch-size", "512", "--train-subset", "100"]))
    Traceback (most recent call last):
    ...
    pedconv.errors.UsageError: --train-subset 100 is smaller than one optimizer step of 512 images ...
    """
    plan = make_plan(args)
    check_output_folder(plan.out)
    try:  # every run shares the recipe: the first one's options stand for all
        resolved_options(plan)
    except TrainOptionsError as e:
        raise UsageError(str(e)) from None


def run_compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run (or continue) the comparison described by parsed ``args``; returns the table rows.

    Raises:
        UsageError: bad or repeated model specs; CompareError: the output folder holds runs of
        another recipe; FolderBusyError: another comparison is writing the output folder;
        RunInterrupted: Ctrl-C or SIGTERM (its message says how to continue); and what
        :func:`pedconv.training.train.train` raises.
    """
    plan = make_plan(args)
    if getattr(args, "report_only", False):
        return report_only(plan, explicit_seeds=args.seeds is not None)
    with FolderLock(plan.out, "pedconv compare"), sigterm_raises():
        remove_leftover_temps(plan.out, REPORTS)
        options = resolved_options(plan)
        print_budget(plan, options)
        progress = CompareProgress([(f"{spec.label} seed {seed}", folder) for spec, seed, folder in plan.runs],
                                   options.epochs, metric=task_of(plan.task).best_metric)
        start = time.time()
        try:
            records = run_all(plan, progress, quiet=not args.verbose, jobs=args.jobs)
            progress.close()
            rows = summarize(records, *table_metrics(plan))
            write_reports(rows, records, report_meta(plan, records, invocation_time_s=time.time() - start), plan.out,
                           start)
        except (KeyboardInterrupt, RunInterrupted) as e:
            signum = e.signal_number if isinstance(e, RunInterrupted) else int(signal.SIGINT)
            raise RunInterrupted(f"interrupted by {signal.Signals(signum).name} {progress.where()}; finished runs "
                                 "are kept and an interrupted run continues from its last checkpoint. Resume with: "
                                 f"{resume_command(args, plan.out)}", signum) from None
        finally:
            progress.close()
    return rows


def report_only(plan: Plan, explicit_seeds: bool) -> list[dict[str, Any]]:
    """``--report-only``: the reports from the finished runs of ``plan``'s models (its seeds, or
    every ``seed<k>`` folder there), training nothing; returns the table rows.

    Raises:
        UsageError: no finished run of these models there; CompareError: one of another recipe.
    """
    with FolderLock(plan.out, "pedconv compare"):
        start = time.time()
        records, left_out = [], []
        for spec in plan.specs:
            model_dir = plan.out / "runs" / spec.folder
            seeds = plan.seeds if explicit_seeds else sorted(
                int(m.group(1)) for d in model_dir.glob("seed*") if (m := re.fullmatch(r"seed(\d+)", d.name)))
            for seed in seeds:
                identity = run_identity(spec, seed, plan.width, plan.recipe, plan.extra, plan.init_for(spec))
                record = finished_record(model_dir / f"seed{seed}", identity, plan.recipe)
                if record is None:
                    left_out.append(f"{spec.label} seed {seed}")
                else:
                    records.append(record)
        if not records:
            raise UsageError(f"--report-only: {plan.out} holds no finished run of "
                             f"{', '.join(s.label for s in plan.specs)} (train them first)")
        if left_out:
            print(f"left out, not finished: {', '.join(left_out)}", flush=True)
        rows = summarize(records, *table_metrics(plan))
        write_reports(rows, records, report_meta(plan, records, report_only=True, left_out=left_out), plan.out, start)
    return rows


def table_metrics(plan: Plan) -> tuple[str, tuple[str, ...]]:
    """The metric a comparison ranks by and the others its table shows: classification's tables
    (the published ones) keep top-1 alone; another task's show all of its result metrics."""
    task = task_of(plan.task)
    return task.best_metric, (() if plan.task == "train" else task.result_metrics)


def resolved_options(plan: Plan) -> argparse.Namespace:
    """The first run's options as its training resolves them (every run shares the recipe)."""
    from ..training.config import resolve_config

    spec, seed, folder = plan.runs[0]
    return resolve_config(run_config(spec, seed, plan.width, plan.recipe, plan.extra, folder, quiet=True,
                                     init_from=plan.init_for(spec), task=plan.task), task_of(plan.task))


def print_budget(plan: Plan, options: argparse.Namespace) -> None:
    """One line: the runs, and the recipe they share."""
    subset = getattr(options, "train_subset", None)
    data = getattr(options, "data", None) or getattr(options, "data_dir", None) or "the offline scene set"
    task = "" if plan.task == "train" else f"--task {plan.task} "
    width = "each model's own width" if plan.width is None else f"width {plan.width}"
    print(f"pedconv compare [{task}{plan.preset}]: {len(plan.specs)} models x {len(plan.seeds)} seeds = "
          f"{len(plan.runs)} runs; each {options.epochs} epochs on {subset or 'all'} training images, {width}, "
          f"batch {options.batch_size}, lr {options.lr} per {options.lr_base_batch}; data {data}; "
          f"output {plan.out}", flush=True)


def resume_command(args: argparse.Namespace, out: Path) -> str:
    """The command line that continues this comparison: its options, with the folder made explicit."""
    words = ["pedconv", "compare"]
    if getattr(args, "task", "train") != "train":
        words += ["--task", args.task]
    if args.preset not in (None, "default"):
        words += ["--preset", args.preset]
    if args.models:
        words += ["--models", *args.models]
    if args.seeds is not None:
        words += ["--seeds", *map(str, args.seeds)]
    for key in ("width", "epochs", "train_subset", "val_subset", "batch_size", "lr"):
        if getattr(args, key) is not None:
            words += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if getattr(args, "init_from", None) is not None:
        words += ["--init-from", str(args.init_from)]
    if getattr(args, "init_models", None):
        words += ["--init-models", *args.init_models]
    if args.data not in (None, "fashion_mnist"):
        words += ["--data", args.data]
    if args.data_dir:
        words += ["--data-dir", str(args.data_dir)]
    words += ["--output", str(out)] + (["--verbose"] if args.verbose else [])
    if getattr(args, "jobs", 1) > 1:
        words += ["--jobs", str(args.jobs)]
    extra = [a for a in (args.train_options or []) if a != "--"]
    return shlex.join(words + (["--", *extra] if extra else []))


def run(args: argparse.Namespace) -> int:
    """``pedconv compare`` on parsed options; errors propagate to :func:`pedconv.cli.main`, which prints them."""
    run_compare(args)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pedconv compare`` entry point: exit status 0 ok, 1 error, 2 usage error, 130 / 143 interrupted by
    Ctrl-C / SIGTERM."""
    from ..cli import main as cli_main

    return cli_main(["compare", *(sys.argv[1:] if argv is None else argv)])
