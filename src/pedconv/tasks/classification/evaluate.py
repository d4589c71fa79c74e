"""``pedconv eval``: top-1/top-5, loss, parameters, FLOPs and speed of a model on a dataset.

Examples::

    pedconv eval --checkpoint runs/pedconv_cifar_resnet20-20261125-101010/best.pt   # a `pedconv train` checkpoint
    pedconv eval --checkpoint runs/x/best.pt --json results.json   # the results as JSON too
    pedconv eval --model pedconv_resnet18 --weights state_dict.pt --data imagefolder --data-dir /data/imagenet
    pedconv eval --authors-arch resnet50 --weights pedconv_resnet50.pth --data imagefolder --data-dir /data/imagenet

With ``--checkpoint`` the model is rebuilt from the configuration saved in it (name, options,
classes, input channels) and the dataset defaults to the one it was trained on (full
validation split unless ``--val-subset``). ``--weights`` accepts a bare state dict, one under
``state_dict`` or ``model`` (timm's loader; a ``module.`` prefix is removed), or a pedconv
training checkpoint. ``--authors-arch`` loads the authors' released checkpoint layout with
:func:`pedconv.load_authors_checkpoint` (``--reference-arch``, its former name, still works).
FLOPs are multiply-adds for one image at the dataset's input size (:func:`pedconv.profile_model`).
It is :mod:`pedconv.training.evaluation` with the classification task: the one evaluation path of
every task (``pedconv <task> eval`` is the same code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Optional

from ...errors import CheckpointError, EvalError
from ...training.evaluation import add_eval_arguments, check_eval_args, evaluate, report
from .task import Classification

__all__ = ["CheckpointError", "EvalError", "build_parser", "evaluate_args", "evaluate_model", "main", "run",
           "validate_args"]

# Option names that were renamed: evaluate_model() still takes the old ones.
_RENAMED = {"reference_arch": "authors_arch"}

_TASK = Classification()


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv eval`` options, added to ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--checkpoint", "best.pt"]).checkpoint
    'best.pt'
    >>> build_parser().parse_args(["--reference-arch", "resnet50"]).authors_arch  # the former name
    'resnet50'
    """
    p = parser or argparse.ArgumentParser(prog="pedconv eval", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(p, _TASK, batch_size=256)
    return p


def validate_args(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, a request that cannot work: :class:`~pedconv.errors.UsageError`
    for options that do not go together, :class:`~pedconv.errors.RunError` for a device or a
    ``--json`` folder this machine does not have.

    >>> validate_args(build_parser().parse_args(["--model", "cifar_resnet20", "--data", "imagefolder"]))
    Traceback (most recent call last):
    ...
    pedconv.errors.UsageError: --data imagefolder needs --data-dir DIR (val/ holds one subfolder per class)
    """
    check_eval_args(args, _TASK)


def evaluate_args(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as described by parsed ``args``; returns the result dict (``pedconv eval`` prints it).

    >>> from pedconv.tasks.classification import evaluate as ev
    >>> args = ev.build_parser().parse_args(["--model", "cifar_resnet20", "--val-subset", "64"])
    >>> r = ev.evaluate_args(args)
    >>> sorted(r)[:4]
    ['amp', 'batch_size', 'data', 'device']
    """
    validate_args(args)
    return evaluate(_TASK, args, build_parser())


def evaluate_model(**options: Any) -> dict[str, Any]:
    """Programmatic ``pedconv eval``: keyword options named like the flags.

    >>> r = evaluate_model(model="cifar_resnet20", val_subset=64)  # or checkpoint="runs/x/best.pt"
    >>> 0.0 <= r["top1"] <= 100.0
    True
    """
    args = build_parser().parse_args([])
    for k, v in options.items():
        k = _RENAMED.get(k, k)
        if not hasattr(args, k):
            raise EvalError(f"unknown option {k!r}")
        setattr(args, k, v)
    return evaluate_args(args)


def run(args: argparse.Namespace) -> int:
    """``pedconv eval`` on parsed options: print the results (``--json``: as JSON, and into its
    file); errors propagate to :func:`pedconv.cli.main`, which prints them."""
    report(_TASK, args, evaluate_args(args))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pedconv eval`` entry point: exit status 0 ok, 1 error, 2 usage error.

    >>> main(["--checkpoint", "/nonexistent.pt"])  # stderr: pedconv eval: error: ... does not exist
    1
    """
    from ...cli import main as cli_main

    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
