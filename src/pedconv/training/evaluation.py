"""Evaluation of a trained model on a task's validation split: the one path behind ``pedconv eval``
(classification) and ``pedconv <task> eval``.

The model is a training checkpoint (rebuilt from the configuration saved in it), a registered
model with ``--weights`` (a state dict file, bare or under ``state_dict`` / ``model``, read by
timm's loader; a ``module.`` prefix is removed), or the authors' released checkpoint
(``--authors-arch``). The data and task options are the checkpoint's saved ones (or a train
preset's, for ``--model``) under the eval flags that were given. The result holds the task's
metrics by name (``val_`` dropped: ``top1``, ``AP``, ``mIoU``, ``pgd10``...), where the model
came from, the data, parameters and FLOPs (:func:`pedconv.profile_model`, at the task's input
size) and the evaluation speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from ..errors import EvalError, UsageError
from ..models.authors import AUTHORS_ARCHS, load_authors_checkpoint
from ..tools.flops import parameter_summary, profile_model
from ..utils.atomic import atomic_write_text
from ..utils.options import check_output_folder, positive_int
from ..utils.reporting import json_ready
from .checkpoint import load_training_checkpoint
from .config import add_model_kwargs_argument, build_train_parser
from .data import DataSpec, ShardBatchSampler, make_loader
from .distributed import DistEnv, resolve_device
from .model_setup import ModelArgs
from .task import Task

__all__ = ["add_eval_arguments", "check_eval_args", "evaluate", "format_result", "load_weights", "report"]


def add_eval_arguments(p: argparse.ArgumentParser, task: Task, batch_size: int) -> None:
    """The options of ``task``'s evaluation: where the model comes from, the task's data options
    (:meth:`~pedconv.training.task.Task.add_eval_arguments`), its train presets, the hardware,
    ``--no-profile`` and ``--json``.

    >>> from pedconv.tasks.classification import Classification
    >>> p = argparse.ArgumentParser()
    >>> add_eval_arguments(p, Classification(), 256)
    >>> args = p.parse_args(["--model", "cifar_resnet20", "--json"])
    >>> args.model, args.json, args.profile, args.data
    ('cifar_resnet20', '-', True, None)
    """
    g = p.add_argument_group("model")
    writers = " or ".join(f"`{c}`" for c in (task.train_command, *task.evaluates_checkpoints_of))
    g.add_argument("--checkpoint", default=None, help=f"a checkpoint written by {writers} (last.pt / best.pt)")
    g.add_argument("--model", default=None, help="a registered model name (with --weights, or random init)")
    add_model_kwargs_argument(g, "builder options for --model, values parsed as YAML")
    g.add_argument("--weights", default=None,
                   help="a state dict file for --model / --authors-arch (bare, or under 'state_dict' / 'model')")
    if task.loads_authors_checkpoints:
        g.add_argument("--authors-arch", choices=AUTHORS_ARCHS, default=None,
                       help="--weights is the authors' released checkpoint of pedconv_<arch>")
        g.add_argument("--reference-arch", dest="authors_arch", choices=AUTHORS_ARCHS, help=argparse.SUPPRESS)
    if task.presets:
        p.add_argument("--preset", choices=sorted(task.presets), default=None,
                       help="take the data and task options (and --model's builder options) of this train preset")
        if "quick" in task.presets:
            p.add_argument("--quick", dest="preset", action="store_const", const="quick",
                           help="same as --preset quick (the data of `train --quick`)")
    task.add_eval_arguments(p)
    g = _add_run_arguments(p, batch_size=batch_size)
    g.add_argument("--no-profile", dest="profile", action="store_false", help="skip the parameter and FLOPs count")
    g.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="the results as JSON: on stdout instead of the table, or (with PATH) written there too")


def check_eval_args(args: argparse.Namespace, task: Task) -> None:
    """Refuse, before anything is loaded, a request that cannot work (one model source, the
    task's own checks, the device, the ``--json`` folder).

    Raises:
        UsageError: options that do not go together.
        RunError: a device or a ``--json`` folder this machine does not have.
    """
    authors = getattr(args, "authors_arch", None)
    if (args.checkpoint is None) == (args.model is None and authors is None):
        raise UsageError("give either --checkpoint PATH or --model NAME"
                         + (" / --authors-arch ARCH" if task.loads_authors_checkpoints else "") + " (with --weights)")
    if authors is not None and args.weights is None:
        raise UsageError("--authors-arch needs --weights (the authors' checkpoint file)")
    if args.checkpoint is not None and (args.weights or args.model_kwargs):
        raise UsageError("--weights / --model-kwargs do not apply to --checkpoint (the model comes from it)")
    task.check_eval_args(args)
    resolve_device(args.device)
    if args.json not in (None, "-"):
        check_output_folder(Path(args.json).parent, "--json")


def load_weights(model: nn.Module, path: str) -> None:
    """``path``'s state dict into ``model``, strictly (timm's loader: a bare state dict, one under
    ``state_dict`` / ``model``, a ``module.`` prefix removed).

    Raises:
        FileNotFoundError: no such file.
        EvalError: an unreadable file, or weights that do not fit (torch's report, on one line).
    """
    from timm.models import load_checkpoint

    if not Path(path).is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    try:
        load_checkpoint(model, path, use_ema=False, strict=True)
    except RuntimeError as e:  # torch's load_state_dict: missing/unexpected keys, size mismatches
        raise EvalError(f"weights {path} do not fit the model: {' '.join(str(e).split())}") from None
    except Exception as e:  # unreadable/corrupt file
        raise EvalError(f"cannot read weights {path}: {type(e).__name__}: {e}") from None


def _add_run_arguments(p: argparse.ArgumentParser, batch_size: int) -> Any:
    """The hardware options of an evaluation (``pedconv eval``, ``pedconv <task> eval``); returns the group.

    >>> g = _add_run_arguments(argparse.ArgumentParser(), 16)
    >>> sorted(a.dest for a in g._group_actions)
    ['amp', 'amp_dtype', 'batch_size', 'channels_last', 'device', 'threads']
    """
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=positive_int, default=batch_size)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    g.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU, float16 on CUDA by default)")
    g.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default=None)
    g.add_argument("--channels-last", action="store_true")
    return g


def _options(task: Task, args: argparse.Namespace, eval_parser: argparse.ArgumentParser,
             saved: Mapping[str, Any]) -> argparse.Namespace:
    """The task's training options as they apply to this evaluation: defaults < the train preset
    < the checkpoint's saved options < the eval flags given (those that differ from their defaults)."""
    options = build_train_parser(None, task).parse_args([])
    preset = dict(task.presets[args.preset]) if getattr(args, "preset", None) else {}
    if preset.get("model") not in (None, args.model):  # builder options of another model do not apply
        preset.pop("model_kwargs", None)
    for k, v in {**preset, **saved}.items():
        if hasattr(options, k) and not k.startswith("_"):
            setattr(options, k, v)
    defaults = eval_parser.parse_args([])
    given = {k: v for k, v in vars(args).items() if (k in vars(defaults) and v != getattr(defaults, k))
             or not hasattr(options, k)}
    if "data" in given and "data_dir" not in given:  # another dataset than the checkpoint's: not its folder
        options.data_dir = None
    for k, v in given.items():
        setattr(options, k, v)
    return options


def _load_model(task: Task, args: argparse.Namespace, options: argparse.Namespace, spec: DataSpec
                ) -> tuple[nn.Module, ModelArgs, dict[str, Any]]:
    """The model to evaluate and where it came from."""
    if args.checkpoint is not None:
        from .resume import model_from_checkpoint

        model, margs, ckpt = model_from_checkpoint(args.checkpoint)
        return model, margs, {"checkpoint": str(args.checkpoint), "epoch": ckpt["epoch"],
                              "global_step": ckpt["global_step"]}
    authors = getattr(args, "authors_arch", None)
    if authors is not None:
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"--weights {args.weights}: no such file")
        model = load_authors_checkpoint(args.weights, authors, num_classes=spec.num_classes)
        return model, ModelArgs(f"pedconv_{authors}", spec.num_classes, {}, spec.in_chans, 3), {"weights": args.weights}
    options.model, options.model_kwargs = args.model, args.model_kwargs or options.model_kwargs
    try:
        model, margs = task.build_model(options, spec)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if args.weights:
        load_weights(model, args.weights)
    else:
        print(f"{task.eval_command}: warning: no --weights: evaluating a randomly initialised model", file=sys.stderr)
    return model, margs, {"weights": args.weights}


def evaluate(task: Task, args: argparse.Namespace, eval_parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Evaluate the model that parsed eval options ``args`` describe on ``task``'s validation
    split; the result dict (see the module's docstring; :func:`format_result` prints it).

    >>> from pedconv.tasks.classification import Classification
    >>> task, p = Classification(), argparse.ArgumentParser()
    >>> add_eval_arguments(p, task, 256)
    >>> r = evaluate(task, p.parse_args(["--model", "cifar_resnet20", "--val-subset", "64"]), p)
    >>> r["images"], r["input_size"], 0.0 <= r["top1"] <= 100.0
    (64, [1, 28, 28], True)
    """
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
        raise EvalError(f"the model has {margs.num_classes} classes but {spec.name} has {spec.num_classes}")
    if margs.input_chans != spec.in_chans and spec.in_chans != 1:
        raise EvalError(f"the model takes {margs.input_chans} input channels but {spec.name} has {spec.in_chans}")
    model.to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(spec, spec.val, ShardBatchSampler(spec.num_val, args.batch_size), device,
                         getattr(options, "workers", None))
    start = time.perf_counter()
    metrics = task.evaluate(model, loader, options, spec, margs, DistEnv(device=device), final=True)
    seconds = time.perf_counter() - start
    hw = task.input_size(options, spec)
    result: dict[str, Any] = {k.removeprefix("val_"): metrics[k] for k in task.result_metrics if k in metrics}
    result.update(model=margs.name, model_kwargs=margs.kwargs, **source, data=spec.name,
                  images=int(metrics.get("val_images", spec.num_val)), input_size=[margs.input_chans, *hw],
                  eval_images_per_s=metrics.get("eval_images_per_s", spec.num_val / seconds),
                  batch_size=args.batch_size, device=str(device), amp=bool(args.amp))
    if args.profile:
        prof = profile_model(model, (1, margs.input_chans, *hw))
        result.update(params=prof.params, params_train=prof.params_train, macs=prof.macs)
    return result


def format_result(task: Task, result: Mapping[str, Any]) -> str:
    """The printed form of :func:`evaluate`'s result: model, data, metrics, size, speed."""
    source = result.get("checkpoint") or result.get("weights") or "random init"
    names = [k.removeprefix("val_") for k in task.result_metrics]
    metrics = "  ".join(f"{k} {result[k]:.4g}" if k == "loss" else f"{k} {result[k]:.2f}"
                        for k in names if k in result)  # nan: "nan"
    kwargs = f" {result['model_kwargs']}" if result.get("model_kwargs") else ""
    lines = [f"model    {result['model']}{kwargs} ({source})",
             f"data     {result['data']}: {result['images']} validation images, input {result['input_size']}",
             f"metrics  {metrics}"]
    if "params" in result:
        summary = parameter_summary(result["params"], result["params_train"] - result["params"])
        lines.append(f"params   {summary}   MACs {result['macs'] / 1e6:.1f}M per image")
    lines.append(f"speed    {result['eval_images_per_s']:.1f} images/s (batch {result['batch_size']}, "
                 f"{result['device']}{', amp' if result['amp'] else ''})")
    return "\n".join(lines)


def report(task: Task, args: argparse.Namespace, result: Mapping[str, Any], out: Optional[Any] = None) -> None:
    """Print ``result``: :func:`format_result`'s table, or JSON with a bare ``--json``; ``--json
    PATH`` prints the table and writes the JSON there."""
    out = out or sys.stdout
    text = json.dumps(json_ready(result), indent=2)
    if args.json == "-":
        print(text, file=out)
        return
    print(format_result(task, result), file=out)
    if args.json is not None:
        path = atomic_write_text(args.json, text + "\n")
        print(f"wrote {path}", file=out)
