"""``pedconv eval``: top-1/top-5, loss, parameters, FLOPs and speed of a model on a dataset.

Examples::

    pedconv eval --checkpoint runs/pedconv_cifar_resnet20-20261125-101010/best.pt   # a `pedconv train` checkpoint
    pedconv eval --model pedconv_resnet18 --weights state_dict.pt --data imagefolder --data-dir /data/imagenet
    pedconv eval --authors-arch resnet50 --weights pedconv_resnet50.pth --data imagefolder --data-dir /data/imagenet

With ``--checkpoint`` the model is rebuilt from the configuration saved in it (name, options,
classes, input channels) and the dataset defaults to the one it was trained on (full
validation split unless ``--val-subset``). ``--weights`` accepts a bare state dict, one under
``state_dict`` or ``model`` (timm's loader; a ``module.`` prefix is removed), or a pedconv
training checkpoint. ``--authors-arch`` loads the authors' released checkpoint layout with
:func:`pedconv.load_authors_checkpoint` (``--reference-arch``, its former name, still works).
FLOPs are multiply-adds for one image at the dataset's input size (:func:`pedconv.profile_model`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from ...errors import CheckpointError, EvalError, UsageError
from ...models.authors import AUTHORS_ARCHS, load_authors_checkpoint
from ...tools.flops import parameter_summary, profile_model
from ...training.config import add_eval_run_arguments, add_model_kwargs_argument
from ...training.data import BatchPreprocessor, DataSpec, ShardBatchSampler, make_loader
from ...training.distributed import DistEnv, resolve_device
from ...training.model_setup import ModelArgs, build_model
from ...training.recipe import amp_dtype
from ...training.resume import model_from_checkpoint
from ...utils.atomic import atomic_write_text
from ...utils.options import check_output_folder
from .data import add_data_arguments, build_data
from .task import evaluate_classifier

__all__ = ["CheckpointError", "EvalError", "build_parser", "evaluate_args", "evaluate_model", "main", "run",
           "validate_args"]

# Option names that were renamed: evaluate_model() still takes the old ones.
_RENAMED = {"reference_arch": "authors_arch"}


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv eval`` options, added to ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--checkpoint", "best.pt"]).checkpoint
    'best.pt'
    >>> build_parser().parse_args(["--reference-arch", "resnet50"]).authors_arch  # the former name
    'resnet50'
    """
    p = parser or argparse.ArgumentParser(prog="pedconv eval", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", default=None, help="a `pedconv train` checkpoint (last.pt / best.pt)")
    g.add_argument("--model", default=None, help="a registered model name (with --weights, or random init)")
    add_model_kwargs_argument(g, "builder options for --model, values parsed as YAML")
    g.add_argument("--weights", default=None, help="state dict file for --model / --authors-arch")
    g.add_argument("--authors-arch", choices=AUTHORS_ARCHS, default=None,
                   help="--weights is the authors' released checkpoint of pedconv_<arch>")
    g.add_argument("--reference-arch", dest="authors_arch", choices=AUTHORS_ARCHS, help=argparse.SUPPRESS)
    add_data_arguments(p, defaults_from_checkpoint=True)
    g = add_eval_run_arguments(p, batch_size=256)
    g.add_argument("--no-profile", dest="profile", action="store_false", help="skip the params/FLOPs count")
    g.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    return p


def _check_request(args: argparse.Namespace) -> None:
    if (args.checkpoint is None) == (args.model is None and args.authors_arch is None):
        raise EvalError("give either --checkpoint PATH, or --model NAME / --authors-arch ARCH (with --weights)")
    if args.authors_arch is not None and args.weights is None:
        raise EvalError("--authors-arch needs --weights (the authors' checkpoint file)")
    if args.checkpoint is not None and (args.weights or args.model_kwargs):
        raise EvalError("--weights / --model-kwargs do not apply to --checkpoint (the model comes from the checkpoint)")


def validate_args(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, a request that cannot work: :class:`~pedconv.errors.EvalError`
    for a model/weights combination, :class:`~pedconv.errors.UsageError` for options that make no
    sense, :class:`~pedconv.errors.RunError` for a device or a ``--json`` folder this machine does not have.

    >>> validate_args(build_parser().parse_args(["--model", "cifar_resnet20", "--data", "imagefolder"]))
    Traceback (most recent call last):
    ...
    pedconv.errors.UsageError: --data imagefolder needs --data-dir DIR (val/ holds one subfolder per class)
    """
    _check_request(args)
    if args.data == "imagefolder" and not args.data_dir:
        raise UsageError("--data imagefolder needs --data-dir DIR (val/ holds one subfolder per class)")
    resolve_device(args.device)
    if args.json:
        check_output_folder(Path(args.json).parent, "--json")


def _load_weights(model: nn.Module, path: str) -> None:
    from timm.models import load_checkpoint

    if not Path(path).is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    try:
        load_checkpoint(model, path, use_ema=False, strict=True)
    except RuntimeError as e:  # torch's load_state_dict: missing/unexpected keys, size mismatches
        raise EvalError(f"weights {path} do not fit the model: {str(e).strip()}") from None
    except Exception as e:  # unreadable/corrupt file
        raise EvalError(f"cannot read weights {path}: {type(e).__name__}: {e}") from None


def _model_for_data(args: argparse.Namespace, spec: DataSpec) -> tuple[nn.Module, ModelArgs]:
    """The model of ``--authors-arch`` or ``--model`` (with ``--weights``) for the dataset's classes."""
    if args.authors_arch is not None:
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"--weights {args.weights}: no such file")
        model = load_authors_checkpoint(args.weights, args.authors_arch, num_classes=spec.num_classes)
        return model, ModelArgs(f"pedconv_{args.authors_arch}", spec.num_classes, {}, spec.in_chans, 3)
    try:
        model, margs = build_model(args.model, spec.num_classes, spec.in_chans, args.model_kwargs)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if args.weights:
        _load_weights(model, args.weights)
    else:
        print("pedconv eval: warning: no --weights: evaluating a randomly initialised model", file=sys.stderr)
    return model, margs


def _load(args: argparse.Namespace) -> tuple[nn.Module, ModelArgs, DataSpec, Optional[int], dict[str, Any]]:
    """The model, the dataset (by default a checkpoint's), the image size and what the model came from."""
    saved: dict[str, Any] = {}
    if args.checkpoint is not None:
        model, margs, ckpt = model_from_checkpoint(args.checkpoint)
        saved = ckpt["config"]
        info: dict[str, Any] = {"checkpoint": str(args.checkpoint), "epoch": ckpt["epoch"],
                                "global_step": ckpt["global_step"]}
    data_name = args.data or saved.get("data") or "fashion_mnist"
    data_dir = args.data_dir if args.data_dir is not None else (saved.get("data_dir") if args.data is None else None)
    img_size = args.img_size or saved.get("img_size")
    subset_seed = args.subset_seed if args.subset_seed is not None else saved.get("subset_seed", 0)
    spec = build_data(data_name, data_dir, args.download, None, args.val_subset, subset_seed, img_size,
                      args.crop_pct, need_train=False)
    if args.checkpoint is None:
        model, margs = _model_for_data(args, spec)
        info = {"weights": args.weights}
    if margs.num_classes != spec.num_classes:
        raise EvalError(f"the model has {margs.num_classes} classes but {data_name} has {spec.num_classes}")
    if margs.input_chans != spec.in_chans and spec.in_chans != 1:
        raise EvalError(f"the model takes {margs.input_chans} input channels but {data_name} has {spec.in_chans}")
    return model, margs, spec, img_size, info


def evaluate_args(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as described by parsed ``args``; returns the result dict (``pedconv eval`` prints it).

    >>> from pedconv.tasks.classification import evaluate as ev
    >>> args = ev.build_parser().parse_args(["--model", "cifar_resnet20", "--val-subset", "64"])
    >>> r = ev.evaluate_args(args)
    >>> sorted(r)[:4]
    ['amp', 'batch_size', 'data', 'device']
    """
    validate_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, margs, spec, img_size, info = _load(args)
    model.to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    size = (img_size, img_size) if (img_size and spec.in_memory) else None
    hw = size or spec.input_size
    out_chans = margs.input_chans if margs.input_chans != spec.in_chans else None
    pre = BatchPreprocessor(spec.mean, spec.std, size=size, out_chans=out_chans, channels_last=args.channels_last)
    loader = make_loader(spec, spec.val, ShardBatchSampler(spec.num_val, args.batch_size), device, args.workers)
    dtype = amp_dtype(device, args.amp_dtype) if args.amp else None
    metrics = evaluate_classifier(model, loader, pre, DistEnv(device=device), args.amp, dtype)
    result: dict[str, Any] = {
        "model": margs.name, "model_kwargs": margs.kwargs, **info, "data": spec.name,
        "images": int(metrics["val_images"]),
        "input_size": [margs.input_chans, *hw], "top1": metrics["val_top1"], "top5": metrics["val_top5"],
        "loss": metrics["val_loss"], "eval_images_per_s": metrics["eval_images_per_s"],
        "batch_size": args.batch_size, "device": str(device), "amp": bool(args.amp),
    }
    if args.profile:
        prof = profile_model(model, (1, margs.input_chans, *hw))
        result.update(params=prof.params, params_train=prof.params_train, macs=prof.macs)
    return result


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


def _print(result: dict[str, Any]) -> None:
    source = result.get("checkpoint") or result.get("weights") or "random init"
    lines = [f"model   {result['model']} {result['model_kwargs'] or ''} ({source})",
             f"data    {result['data']}: {result['images']} validation images, input {result['input_size']}",
             f"top-1   {result['top1']:.2f}%   top-5 {result['top5']:.2f}%   loss {result['loss']:.4f}"]
    if "params" in result:
        summary = parameter_summary(result["params"], result["params_train"] - result["params"])
        lines.append(f"params  {summary}   MACs {result['macs'] / 1e6:.1f}M per image")
    lines.append(f"speed   {result['eval_images_per_s']:.0f} images/s (batch {result['batch_size']}, {result['device']}"
                 f"{', amp' if result['amp'] else ''})")
    print("\n".join(lines))


def run(args: argparse.Namespace) -> int:
    """``pedconv eval`` on parsed options: print the results (and write ``--json``); errors propagate
    to :func:`pedconv.cli.main`, which prints them."""
    result = evaluate_args(args)
    _print(result)
    if args.json:
        path = atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"wrote {path}")
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
