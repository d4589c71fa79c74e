"""``pedconv <task> train|eval``: the command of a downstream task, on the training pipeline.

A task's command module (``pedconv/tasks/<task>/command.py``) is one :class:`TaskCommand`;
``train`` is :func:`pedconv.training.train.train` with the task (same run folder, resume,
DDP, progress, ``metrics.jsonl``, curves, checkpoints, plus ``result.json`` with the task's
metrics by name); ``eval`` rebuilds the model of a checkpoint (or ``--model`` with
``--weights``), evaluates it on the task's validation split and prints the metrics (``--json``:
as JSON on stdout, ``--json PATH``: into a file as well).

In ``eval``, the data and task options come from the checkpoint's saved options (or from
``--preset``/``--quick``, for a ``--model``), and the ones given on the command line (those
that differ from their defaults) win over both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from ..errors import CheckpointError, EvalError, UsageError
from ..utils.atomic import atomic_write_text
from ..utils.options import check_output_folder
from ..utils.reporting import json_ready
from .checkpoint import load_training_checkpoint
from .config import add_eval_run_arguments, add_model_kwargs_argument, build_train_parser, config_layer, validate_args
from .data import ShardBatchSampler, make_loader
from .distributed import DistEnv, resolve_device
from .model_setup import ModelArgs
from .task import Task

__all__ = ["TaskCommand", "evaluate_task"]


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
        self._eval_arguments(self.eval_parser)
        return parser

    def _eval_arguments(self, p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("model")
        writers = " or ".join(f"`{c}`" for c in (self.task.train_command, *self.task.evaluates_checkpoints_of))
        g.add_argument("--checkpoint", default=None, help=f"a checkpoint written by {writers}")
        g.add_argument("--model", default=None, help="a registered model name (with --weights, or random init)")
        add_model_kwargs_argument(g, "builder options for --model, values parsed as YAML")
        g.add_argument("--weights", default=None, help="a state dict file for --model")
        if self.task.presets:
            p.add_argument("--preset", choices=sorted(self.task.presets), default=None,
                           help="take the data and task options (and --model's builder options) of this train preset")
            if "quick" in self.task.presets:
                p.add_argument("--quick", dest="preset", action="store_const", const="quick",
                               help="same as --preset quick (the data of `train --quick`)")
        self.task.add_arguments(p)
        g = add_eval_run_arguments(p, batch_size=16)
        g.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                       help="print the results as JSON (no PATH: on stdout instead of the table; PATH: also "
                            "write them there)")

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
        if (args.checkpoint is None) == (args.model is None):
            raise UsageError("give either --checkpoint PATH or --model NAME (with --weights)")
        if args.checkpoint is not None and (args.weights or args.model_kwargs):
            raise UsageError("--weights / --model-kwargs do not apply to --checkpoint (the model comes from it)")
        self.task.check_args(args)
        resolve_device(args.device)
        if args.json not in (None, "-"):
            check_output_folder(Path(args.json).parent, "--json")

    def run(self, args: argparse.Namespace) -> int:
        """Train or evaluate; the exit status."""
        if args.action == "train":
            from .train import run

            return run(args, self.task)
        assert self.eval_parser is not None
        result = evaluate_task(self.task, args, self.eval_parser)
        if args.json is None:
            print(_table(self.task, result))
        else:
            text = json.dumps(json_ready(result), indent=2)
            print(text)
            if args.json != "-":
                atomic_write_text(args.json, text + "\n")
        return 0


def _table(task: Task, result: Mapping[str, Any]) -> str:
    source = result.get("checkpoint") or result.get("weights") or "random init"
    metrics = "  ".join(f"{k} {result[k]:.2f}" for k in task.result_metrics if k in result)  # nan: "nan"
    return "\n".join([f"model    {result['model']} ({source})",
                      f"data     {result['data']}: {result['images']} validation images",
                      f"metrics  {metrics}",
                      f"speed    {result['eval_images_per_s']:.1f} images/s ({result['device']})"])


def _options(task: Task, args: argparse.Namespace, eval_parser: argparse.ArgumentParser,
             saved: Mapping[str, Any]) -> argparse.Namespace:
    """The task's training options as they apply to this evaluation: defaults < the checkpoint's
    saved options < the eval flags given (those that differ from their defaults)."""
    options = build_train_parser(None, task).parse_args([])
    preset = dict(task.presets[args.preset]) if getattr(args, "preset", None) else {}
    if preset.get("model") not in (None, args.model):  # builder options of another model do not apply
        preset.pop("model_kwargs", None)
    for k, v in {**preset, **saved}.items():
        if hasattr(options, k) and not k.startswith("_"):
            setattr(options, k, v)
    defaults = eval_parser.parse_args([])
    for k, v in vars(args).items():
        if (k in vars(defaults) and v != getattr(defaults, k)) or not hasattr(options, k):
            setattr(options, k, v)
    return options


def _load_model(task: Task, args: argparse.Namespace, options: argparse.Namespace, spec: Any
                ) -> tuple[nn.Module, ModelArgs, dict[str, Any]]:
    if args.checkpoint is not None:
        from .resume import model_from_checkpoint

        model, margs, ckpt = model_from_checkpoint(args.checkpoint)
        return model, margs, {"checkpoint": str(args.checkpoint), "epoch": ckpt["epoch"]}
    options.model, options.model_kwargs = args.model, args.model_kwargs or options.model_kwargs
    try:
        model, margs = task.build_model(options, spec)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if args.weights:
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"--weights {args.weights}: no such file")
        try:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except (RuntimeError, OSError, ValueError) as e:
            raise EvalError(f"weights {args.weights} do not fit {args.model}: {str(e).strip()}") from None
    else:
        print(f"pedconv {task.name} eval: warning: no --weights: evaluating a randomly initialised model",
              file=sys.stderr)
    return model, margs, {"weights": args.weights}


def evaluate_task(task: Task, args: argparse.Namespace, eval_parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Evaluate the model ``args`` name on ``task``'s validation split; the result dict
    (the task's metrics by name, the model, the data, images/s)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    saved: dict[str, Any] = {}
    if args.checkpoint is not None:
        saved = dict(load_training_checkpoint(args.checkpoint).get("config") or {})
    options = _options(task, args, eval_parser, saved)
    spec = task.build_data(options, need_train=False)
    model, margs, source = _load_model(task, args, options, spec)
    if margs.num_classes != spec.num_classes:
        raise CheckpointError(f"the model has {margs.num_classes} classes but {spec.name} has {spec.num_classes}")
    model.to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(spec, spec.val, ShardBatchSampler(spec.num_val, args.batch_size), device,
                         getattr(options, "workers", None))
    start = time.perf_counter()
    metrics = task.evaluate(model, loader, options, spec, margs, DistEnv(device=device), final=True)
    result: dict[str, Any] = {k: metrics[k] for k in task.result_metrics if k in metrics}
    result.update(model=margs.name, model_kwargs=margs.kwargs, **source, data=spec.name,
                  images=int(metrics.get("val_images", spec.num_val)),
                  eval_images_per_s=metrics.get("eval_images_per_s", spec.num_val / (time.perf_counter() - start)),
                  device=str(device))
    return result
