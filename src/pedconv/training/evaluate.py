"""``pedconv eval``: top-1/top-5, loss, parameters, FLOPs and speed of a model on a dataset.

Examples::

    pedconv eval --checkpoint runs/pedconv_cifar_resnet20-20261125-101010/best.pt   # a `pedconv train` checkpoint
    pedconv eval --model pedconv_resnet18 --weights state_dict.pt --data imagefolder --data-dir /data/imagenet
    pedconv eval --reference-arch resnet50 --weights pedconv_resnet50.pth --data imagefolder --data-dir /data/imagenet

With ``--checkpoint`` the model is rebuilt from the configuration saved in it (name, options,
classes, input channels) and the dataset defaults to the one it was trained on (full
validation split unless ``--val-subset``). ``--weights`` accepts a bare state dict, one under
``state_dict`` or ``model`` (timm's loader; a ``module.`` prefix is removed), or a pedconv
training checkpoint. ``--reference-arch`` loads the authors' released checkpoint layout with
:func:`pedconv.load_authors_checkpoint`. FLOPs are multiply-adds for one image at the
dataset's input size (:func:`pedconv.profile_model`).
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
from torch.utils.data import DataLoader

from ..models.authors import AUTHORS_ARCHS, load_authors_checkpoint
from ..tools.flops import profile_model
from .checkpoint import CheckpointError, load_training_checkpoint
from .config import _ModelKwargsAction, add_data_arguments
from .data import BatchPreprocessor, DataSpec, ShardBatchSampler, build_data
from .distributed import DistEnv, resolve_device
from .loop import evaluate
from .model import ModelArgs, build_model, dynamic_temperature_modules
from .recipe import amp_dtype

__all__ = ["EvalError", "build_parser", "evaluate_model", "main", "run"]


class EvalError(ValueError):
    """A usage problem reported without a traceback by the CLI."""


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv eval`` options.

    >>> build_parser().parse_args(["--checkpoint", "best.pt"]).checkpoint
    'best.pt'
    """
    p = parser or argparse.ArgumentParser(prog="pedconv eval", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", default=None, help="a `pedconv train` checkpoint (last.pt / best.pt)")
    g.add_argument("--model", default=None, help="a registered model name (with --weights, or random init)")
    g.add_argument("--model-kwargs", nargs="*", default={}, action=_ModelKwargsAction, metavar="KEY=VALUE",
                   help="builder options for --model, values parsed as YAML")
    g.add_argument("--weights", default=None, help="state dict file for --model / --reference-arch")
    g.add_argument("--reference-arch", choices=AUTHORS_ARCHS, default=None,
                   help="--weights is the authors' released checkpoint of pedconv_<arch>")
    add_data_arguments(p, defaults_from_checkpoint=True)
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU, float16 on CUDA by default)")
    g.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default=None)
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--no-profile", dest="profile", action="store_false", help="skip the params/FLOPs count")
    g.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    return p


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


def _from_checkpoint(args: argparse.Namespace) -> tuple[nn.Module, ModelArgs, dict[str, Any], dict[str, Any]]:
    ckpt = load_training_checkpoint(args.checkpoint)
    margs = ModelArgs(**ckpt["model_args"])
    model = margs.build()
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {args.checkpoint} does not fit {margs.name} as built now: {e}") from None
    temperature = ckpt.get("dyconv_temperature")
    if temperature is not None:
        for m in dynamic_temperature_modules(model):
            m.temperature = float(temperature)
    info = {"checkpoint": str(args.checkpoint), "epoch": ckpt["epoch"], "global_step": ckpt["global_step"]}
    return model, margs, ckpt["config"], info


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as described by parsed ``args``; returns the result dict (also printed / written).

    >>> import pedconv.evaluate as ev
    >>> r = ev.run(ev.build_parser().parse_args(["--model", "cifar_resnet20", "--val-subset", "64"]))  # doctest: +SKIP
    >>> sorted(r)[:4]  # doctest: +SKIP
    ['batch_size', 'data', 'device', 'eval_images_per_s']
    """
    if (args.checkpoint is None) == (args.model is None and args.reference_arch is None):
        raise EvalError("give either --checkpoint PATH, or --model NAME / --reference-arch ARCH (with --weights)")
    if args.reference_arch is not None and args.weights is None:
        raise EvalError("--reference-arch needs --weights (the authors' checkpoint file)")
    if args.checkpoint is not None and (args.weights or args.model_kwargs):
        raise EvalError("--weights / --model-kwargs do not apply to --checkpoint (the model comes from the checkpoint)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    saved: dict[str, Any] = {}
    info: dict[str, Any] = {}
    if args.checkpoint is not None:
        model, margs, saved, info = _from_checkpoint(args)
    data_name = args.data or saved.get("data") or "fashion_mnist"
    data_dir = args.data_dir if args.data_dir is not None else (saved.get("data_dir") if args.data is None else None)
    img_size = args.img_size or saved.get("img_size")
    subset_seed = args.subset_seed if args.subset_seed is not None else saved.get("subset_seed", 0)
    spec: DataSpec = build_data(data_name, data_dir, args.download, None, args.val_subset, subset_seed, img_size,
                                args.crop_pct, need_train=False)
    if args.checkpoint is None:
        if args.reference_arch is not None:
            if not Path(args.weights).is_file():
                raise FileNotFoundError(f"--weights {args.weights}: no such file")
            model = load_authors_checkpoint(args.weights, args.reference_arch, num_classes=spec.num_classes)
            margs = ModelArgs(f"pedconv_{args.reference_arch}", spec.num_classes, {}, spec.in_chans, 3)
        else:
            try:
                model, margs = build_model(args.model, spec.num_classes, spec.in_chans, args.model_kwargs)
            except ValueError as e:
                raise EvalError(str(e)) from None
            if args.weights:
                _load_weights(model, args.weights)
            else:
                print("pedconv eval: warning: no --weights: evaluating a randomly initialised model", file=sys.stderr)
        info = {"weights": args.weights}
    if margs.num_classes != spec.num_classes:
        raise EvalError(f"the model has {margs.num_classes} classes but {data_name} has {spec.num_classes}")
    if margs.input_chans != spec.in_chans and spec.in_chans != 1:
        raise EvalError(f"the model takes {margs.input_chans} input channels but {data_name} has {spec.in_chans}")

    model.to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    size = (img_size, img_size) if (img_size and spec.in_memory) else None
    hw = size or spec.input_size
    out_chans = margs.input_chans if margs.input_chans != spec.in_chans else None
    pre = BatchPreprocessor(spec.mean, spec.std, size=size, out_chans=out_chans, channels_last=args.channels_last)
    workers = args.workers if args.workers is not None else (0 if spec.in_memory else 4)
    loader_kw: dict[str, Any] = dict(num_workers=workers, pin_memory=device.type == "cuda")
    if spec.collate_fn is not None:
        loader_kw["collate_fn"] = spec.collate_fn
    loader = DataLoader(spec.val, batch_sampler=ShardBatchSampler(spec.num_val, args.batch_size), **loader_kw)
    dtype = amp_dtype(device, args.amp_dtype) if args.amp else None
    metrics = evaluate(model, loader, pre, DistEnv(device=device), args.amp, dtype)
    result: dict[str, Any] = {
        "model": margs.name, "model_kwargs": margs.kwargs, **info, "data": data_name,
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

    >>> r = evaluate_model(checkpoint="runs/x/best.pt", val_subset=1000)  # doctest: +SKIP
    >>> r["top1"]  # doctest: +SKIP
    84.3
    """
    args = build_parser().parse_args([])
    for k, v in options.items():
        if not hasattr(args, k):
            raise EvalError(f"unknown option {k!r}")
        setattr(args, k, v)
    return run(args)


def _print(result: dict[str, Any]) -> None:
    source = result.get("checkpoint") or result.get("weights") or "random init"
    lines = [f"model   {result['model']} {result['model_kwargs'] or ''} ({source})",
             f"data    {result['data']}: {result['images']} validation images, input {result['input_size']}",
             f"top-1   {result['top1']:.2f}%   top-5 {result['top5']:.2f}%   loss {result['loss']:.4f}"]
    if "params" in result:
        lines.append(f"params  {result['params'] / 1e6:.3f}M (with training-only decoders "
                     f"{result['params_train'] / 1e6:.3f}M)   MACs {result['macs'] / 1e6:.1f}M per image")
    lines.append(f"speed   {result['eval_images_per_s']:.0f} images/s (batch {result['batch_size']}, {result['device']}"
                 f"{', amp' if result['amp'] else ''})")
    print("\n".join(lines))


def main(argv: Optional[Sequence[str]] = None, args: Optional[argparse.Namespace] = None) -> int:
    """``pedconv eval`` entry point: exit status 0 ok, 1 error.

    >>> main(["--checkpoint", "/nonexistent.pt"])  # doctest: +SKIP
    pedconv eval: error: checkpoint /nonexistent.pt does not exist
    1
    """
    if args is None:
        args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (EvalError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"pedconv eval: error: {e}", file=sys.stderr)
        return 1
    _print(result)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
