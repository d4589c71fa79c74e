"""``pedconv <task> train|eval``: the command of a downstream task, on the training pipeline.

A task's command module (``pedconv/tasks/<task>/command.py``) is one :class:`TaskCommand`;
``train`` is :func:`pedconv.training.train.train` with the task (same run folder, resume,
DDP, progress, ``metrics.jsonl``, curves, checkpoints, plus ``result.json`` with the task's
metrics by name); ``eval`` is :func:`pedconv.training.evaluation.evaluate`, the evaluation of
every task (``pedconv eval`` too): it rebuilds the model of a checkpoint (or ``--model`` with
``--weights``), evaluates it on the task's validation split and prints the metrics (``--json``:
as JSON on stdout, ``--json PATH``: into a file as well).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Optional

from .config import build_train_parser, config_layer, validate_args
from .evaluation import add_eval_arguments, check_eval_args, evaluate, report
from .task import Task

__all__ = ["TaskCommand"]


class TaskCommand:
    """The ``build_parser`` / ``config_layer`` / ``validate_args`` / ``run`` hooks of
    :mod:`pedconv.cli` for ``pedconv <task> train|eval``.

    >>> from pedconv.tasks.detection.task import Detection
    >>> command = TaskCommand(Detection)
    >>> parser = argparse.ArgumentParser()
    >>> command.build_parser(parser).parse_args(["eval", "--checkpoint", "best.pt"]).action
    'eval'
    """

    def __init__(self, task_type: Callable[[], Task]) -> None:
        self.task = task_type()
        self.train_parser: Optional[argparse.ArgumentParser] = None
        self.eval_parser: Optional[argparse.ArgumentParser] = None

    def build_parser(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add the ``train`` and ``eval`` sub-commands to ``parser``."""
        from ..cli import CommandParser, HelpFormatter

        sub = parser.add_subparsers(dest="action", required=True, metavar="{train,eval}",
                                    parser_class=CommandParser)
        self.train_parser = sub.add_parser("train", help=f"train a {self.task.name} model (resumable, DDP)",
                                           description=parser.description, formatter_class=HelpFormatter)
        build_train_parser(self.train_parser, self.task)
        self.eval_parser = sub.add_parser("eval", help="evaluate a checkpoint", description=parser.description,
                                          formatter_class=HelpFormatter)
        add_eval_arguments(self.eval_parser, self.task, batch_size=16)
        return parser

    def config_layer(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
        """``train``: the preset and ``--config`` / resumed-run layers, under the flags."""
        if args.action != "train" or self.train_parser is None:
            return {}
        layer = config_layer(args, self.train_parser, self.task)
        self.train_parser.set_defaults(**layer)  # the sub-command's own defaults are the ones argparse uses
        return layer

    def validate_args(self, args: argparse.Namespace) -> None:
        """Check the options before anything is loaded."""
        if args.action == "train":
            validate_args(args, self.task)
            return
        check_eval_args(args, self.task)

    def run(self, args: argparse.Namespace) -> int:
        """Train or evaluate; the exit status."""
        if args.action == "train":
            from .train import run

            return run(args, self.task)
        assert self.eval_parser is not None
        report(self.task, args, evaluate(self.task, args, self.eval_parser))
        return 0
