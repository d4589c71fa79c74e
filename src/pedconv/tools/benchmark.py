"""Speed and memory of PEDConv against the static convolution and the dynamic-conv peers.

Every number is a ratio to the static ``nn.Conv2d`` (or static model) timed in the same run,
interleaved round by round, so machine load drifts affect all contestants alike.

* Layer level: every distinct conv shape of torchvision's ResNet-50 and MobileNetV2 at
  224x224 (the stem excluded, as the paper keeps it static), in three modes: a training
  step (forward + backward, input gradients on) at batch 32, eval at batch 32, eval at
  batch 1. Contestants: pedconv with each strategy and ``auto``, timm's ``CondConv2d``
  (4 experts, with its router), DY-Conv (4 kernels) and the authors' formulation
  (``strategy="naive"``).
* Model level: PEDConv-ResNet-18/50 converted from torchvision (downsample shortcuts
  static, as in the authors' models) against the static model.
* Small networks: the CIFAR-style ResNet-20 of ``pedconv compare`` (widths 8 and 16, batch 128,
  1x28x28): static, PEDConv, CondConv and DY-Conv, training step and eval, repeated
  ``--repeats`` times for the spread.
* 1-D and 3-D: one audio-like ``PEDConv1d`` and one video-like ``PEDConv3d`` layer against
  ``nn.Conv1d`` / ``nn.Conv3d``.
* ``--compile``: the model-level sections again with both models under ``torch.compile``
  (compile time reported).

Memory is the bytes autograd saves for backward (the activations that dominate training
memory), de-duplicated by storage, as a ratio to the static layer/model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torchvision

from ..baselines import CondConv2d, DyConv2d, ODConv2d
from ..baselines.kernelwarehouse import KernelWarehouse, KWConv2d
from ..convert import convert
from ..errors import UsageError
from ..method import PEDConv1d, PEDConv2d, PEDConv3d
from ..method.infomax import infomax_loss
from ..utils.atomic import atomic_write_text
from ..utils.options import positive_int
from ..utils.reporting import machine_description
from .bench_tables import markdown_layers_models, markdown_small, plot_layers
from .measure import (
    Runtime,
    compiled_models,
    current_runtime,
    first_calls,
    forward_call,
    inference_call,
    peak_bytes,
    ratio_summary,
    record_ratios,
    saved_bytes,
    sgd_step_call,
    time_interleaved,
    time_spread,
    use_runtime,
)

__all__ = ["MODEL_PEERS", "ConvShape", "Runtime", "bench_layers", "bench_models", "bench_nd", "bench_small",
           "build_parser", "conv_shapes", "main", "run", "run_benchmark", "time_interleaved", "use_runtime"]


@dataclass(frozen=True)
class ConvShape:
    """One convolution of a network, with the input size it sees."""

    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    groups: int
    height: int
    width: int

    @property
    def kind(self) -> str:
        if self.groups == self.cin and self.cin > 1:
            return "depthwise"
        return "pointwise" if self.kernel == 1 else ("dense" if self.groups == 1 else "grouped")

    def label(self) -> str:
        g = f" g{self.groups}" if self.groups > 1 else ""
        return f"{self.cin}->{self.cout} k{self.kernel} s{self.stride}{g} @{self.height}"


def conv_shapes(arch: str, image_size: int = 224) -> list[ConvShape]:
    """Distinct conv shapes of a torchvision model, in forward order, the stem excluded."""
    model = getattr(torchvision.models, arch)().eval()
    shapes: list[ConvShape] = []
    hooks = []

    def hook(m: nn.Conv2d, inputs: tuple, _out: object) -> None:
        h, w = inputs[0].shape[-2:]
        s = ConvShape(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0],  # type: ignore[arg-type]
                      m.groups, int(h), int(w))
        shapes.append(s)

    for m in model.modules():
        if type(m) is nn.Conv2d:
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for h in hooks:
        h.remove()
    return list(dict.fromkeys(shapes[1:]))


def _layer_contestants(s: ConvShape, include_naive: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    args = (s.cin, s.cout, s.kernel)
    kw = dict(stride=s.stride, padding=s.padding, groups=s.groups, bias=False)
    static = nn.Conv2d(*args, **kw)  # type: ignore[arg-type]
    out: dict[str, nn.Module] = {"static": static, "pedconv": PEDConv2d.from_conv(static)}
    for strat in current_runtime().strategies(include_naive):
        out[f"ped_{strat}"] = PEDConv2d.from_conv(static, strategy=strat)
    out["condconv4"] = CondConv2d(*args, **kw, num_experts=4)
    out["dyconv4"] = DyConv2d(*args, **kw, num_kernels=4)
    out["odconv4"] = ODConv2d(*args, **kw, num_kernels=4)
    if s.groups == 1 and s.cout % 2 == 0 and s.cin % 2 == 0:
        # KernelWarehouse with this layer's own warehouse: 4 cells, each a quarter of the kernel
        # (2 x 2 blocks of channels), i.e. the parameters of one static kernel
        warehouse = KernelWarehouse(4, s.cout // 2, s.cin // 2, s.kernel)
        out["kw"] = _WithWarehouse(KWConv2d(*args, **kw, warehouse=warehouse), warehouse)
    return out


class _WithWarehouse(nn.Module):
    """A KernelWarehouse layer owning its warehouse (moved and timed with it)."""

    def __init__(self, conv: nn.Module, warehouse: nn.Module) -> None:
        super().__init__()
        self.conv, self.warehouse = conv, warehouse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _train_step(m: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        with current_runtime().autocast():
            y = m(x)
            loss = y.float().mean()
            if isinstance(m, PEDConv2d) or any(isinstance(c, PEDConv2d) for c in m.modules()):
                loss = loss + 1e-3 * infomax_loss(m)
        loss.backward()
        return y

    return step


def bench_layers(
    archs: Sequence[str] = ("resnet50", "mobilenet_v2"),
    batch: int = 32,
    reps: int = 5,
    image_size: int = 224,
    max_shapes: Optional[int] = None,
    include_naive: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Per-shape ratios to the static conv for train (B=batch), eval (B=batch), eval (B=1)."""
    rows = []
    for arch in archs:
        shapes = conv_shapes(arch, image_size)
        if max_shapes is not None:
            step = max(1, len(shapes) // max_shapes)
            shapes = shapes[::step][:max_shapes]
        for s in shapes:
            mods = {k: m.to(current_runtime().device) for k, m in _layer_contestants(s, include_naive).items()}
            row: dict = dict(arch=arch, shape=s.label(), kind=s.kind, **asdict(s))
            for mode, b in (("train", batch), ("eval", batch), ("eval_b1", 1)):
                x = current_runtime().randn(b, s.cin, s.height, s.width)
                if mode == "train":
                    for m in mods.values():
                        m.train()
                    xg = x.requires_grad_(True)
                    fns: dict[str, Callable[[], object]] = {k: _train_step(m, xg) for k, m in mods.items()}
                    mem = {k: saved_bytes(forward_call(m, xg)) for k, m in mods.items()}
                    row["mem"] = {k: v / mem["static"] for k, v in mem.items()}
                else:
                    for m in mods.values():
                        m.eval()
                    fns = {k: inference_call(m, x) for k, m in mods.items()}
                times = time_interleaved(fns, reps)
                row[mode] = {k: v / times["static"] for k, v in times.items()}
                row[f"{mode}_static_ms"] = 1e3 * times["static"]
            rows.append(row)
            log(f"{arch:>12} {s.label():>28} [{s.kind:>9}]  "
                + "  ".join(f"{mode} {row[mode]['pedconv']:.2f}x" for mode in ("train", "eval", "eval_b1"))
                + f"  mem {row['mem']['pedconv']:.2f}x")
    return rows


def bench_models(
    specs: Sequence[tuple[str, int]] = (("resnet18", 32), ("resnet50", 16)),
    reps: int = 3,
    image_size: int = 224,
    eval_batch: int = 32,
    include_naive: bool = True,
    compile: bool = False,
    repeats: int = 1,
    strategies: bool = False,
    peers: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Model-level ratios: training step (fwd + bwd + SGD), eval at ``eval_batch`` and at 1
    (``compile``: both models under ``torch.compile``; the authors' formulation is left out).
    Each time ratio is the median over ``repeats`` interleaved measurements, with the range in
    ``<mode>_range``. ``strategies``: also PEDConv with every strategy forced; ``peers``: also
    the registered dynamic-convolution peers of the architecture (:data:`MODEL_PEERS`). On CUDA,
    ``peak_mem`` is each contestant's peak memory of a training step over static's."""
    from ..models import create_model, list_models

    rows = []
    for arch, train_batch in specs:
        torch.manual_seed(0)
        static = getattr(torchvision.models, arch)()
        models = {"static": static, "pedconv": convert(static, keep_shortcut=True)}
        if include_naive and not compile:
            models["ped_naive"] = convert(static, keep_shortcut=True, strategy="naive")
        if strategies:
            models.update({f"ped_{k}": convert(static, keep_shortcut=True, strategy=k)
                           for k in current_runtime().strategies()})
        if peers:
            models.update({peer: create_model(f"{peer}_{arch}") for peer in MODEL_PEERS
                           if f"{peer}_{arch}" in list_models()})
        models = {k: m.to(current_runtime().device) for k, m in models.items()}
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
        runners, compile_s = compiled_models(models, compile)
        row: dict = dict(arch=arch, train_batch=train_batch, eval_batch=eval_batch, compile=compile)
        x = current_runtime().randn(train_batch, 3, image_size, image_size)
        target = current_runtime().randint(1000, (train_batch,))

        fns = {k: sgd_step_call(m, opts[k], x, target) for k, m in runners.items()}
        if compile:
            row["train_first_call_s"] = first_calls(fns)
        row["train_static_s"] = record_ratios(row, "train", fns, reps, repeats)
        mem = {k: saved_bytes(forward_call(m.train(), x)) for k, m in models.items()}
        row["mem"] = {k: v / mem["static"] for k, v in mem.items()}
        row["mem_static_mb"] = mem["static"] / 2**20
        peak = {k: peak_bytes(fn) for k, fn in fns.items()}
        if peak["static"]:
            row["peak_mem"] = {k: v / peak["static"] for k, v in peak.items() if v is not None}
            row["peak_mem_static_mb"] = peak["static"] / 2**20
        for mode, b in (("eval", eval_batch), ("eval_b1", 1)):
            xe = current_runtime().randn(b, 3, image_size, image_size)
            fns = {k: inference_call(m, xe, set_eval=True) for k, m in runners.items()}
            if compile:
                row[f"{mode}_first_call_s"] = first_calls(fns)
            row[f"{mode}_static_s"] = record_ratios(row, mode, fns, reps, repeats)
        row["compile_s"] = compile_s
        rows.append(row)
        log(f"{arch}: train {row['train']['pedconv']:.2f}x  eval {row['eval']['pedconv']:.2f}x  "
            f"eval_b1 {row['eval_b1']['pedconv']:.2f}x  mem {row['mem']['pedconv']:.2f}x"
            + (f"  (naive train {row['train']['ped_naive']:.2f}x)" if "ped_naive" in row["train"] else ""))
    return rows


MODEL_PEERS = ("condconv", "dyconv", "odconv", "odconv4x", "kw", "dcd", "weightnet")
"""Prefixes of the registered peer models that ``bench_models(peers=True)`` adds where they
exist for the architecture (``condconv_resnet50``, ``odconv_resnet18``, ``kw_resnet50``, ...)."""


SMALL_MODELS = {
    "static": "cifar_resnet20",
    "pedconv": "pedconv_cifar_resnet20",
    "condconv4": "condconv_cifar_resnet20",
    "dyconv4": "dyconv_cifar_resnet20",
    "odconv": "odconv_cifar_resnet20",
    "kw": "kw_cifar_resnet20",
}
"""The contestants of the small-network benchmark (``pedconv compare``'s models)."""


def bench_small(
    widths: Sequence[int] = (8, 16),
    batch: int = 128,
    reps: int = 5,
    repeats: int = 3,
    compile: bool = False,
    log: Callable[[str], None] = print,
    contestants: Optional[Sequence[str]] = None,
    compile_mode: Optional[str] = None,
) -> list[dict]:
    """Throughput of the CIFAR-style ResNet-20s as a share of static's (``static time / time``;
    > 1 is faster than static), train step and eval, median and range over ``repeats``.
    ``contestants``: keys of :data:`SMALL_MODELS` (default all); ``compile_mode``: torch.compile's."""
    from ..models import create_model

    rows = []
    x, target = current_runtime().randn(batch, 1, 28, 28), current_runtime().randint(10, (batch,))
    chosen = {k: v for k, v in SMALL_MODELS.items() if contestants is None or k == "static" or k in contestants}
    for width in widths:
        models = {}
        for k, name in chosen.items():
            torch.manual_seed(0)
            models[k] = create_model(name, num_classes=10, in_chans=1, width=width).to(current_runtime().device)
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
        runners, compile_s = compiled_models(models, compile, compile_mode)
        row: dict = dict(width=width, batch=batch, compile=compile and (compile_mode or "default"))
        for mode in ("train", "eval"):
            if mode == "train":
                fns = {k: sgd_step_call(m, opts[k], x, target) for k, m in runners.items()}
            else:
                fns = {k: inference_call(m, x, set_eval=True) for k, m in runners.items()}
            if compile:
                row[f"{mode}_first_call_s"] = first_calls(fns)
            ratios = time_spread(fns, reps, repeats)
            row[mode] = {k: ratio_summary([1.0 / r for r in v]) for k, v in ratios.items()}
        row["compile_s"] = compile_s
        rows.append(row)
        log(f"ResNet-20 w{width}{' (compiled)' if compile else ''}: "
            + "  ".join(f"{k} train {row['train'][k]['median']:.2f}x eval {row['eval'][k]['median']:.2f}x"
                        for k in models if k != "static"))
    return rows


ND_CASES: dict[str, dict[str, Any]] = {
    "1d": dict(layer=PEDConv1d, conv=nn.Conv1d, cin=64, cout=64, kernel=3, input=(32, 64, 4000)),
    "3d": dict(layer=PEDConv3d, conv=nn.Conv3d, cin=32, cout=32, kernel=3, input=(8, 32, 8, 28, 28)),
}
"""An audio-like 1-D layer (64 channels, 4000 steps) and a video-like 3-D layer (8 frames of 28x28)."""


def bench_nd(reps: int = 5, cases: Optional[dict[str, dict]] = None, log: Callable[[str], None] = print) -> list[dict]:
    """``PEDConv1d`` / ``PEDConv3d`` against ``nn.Conv1d`` / ``nn.Conv3d``: train, eval, eval B=1
    (``cases``: :data:`ND_CASES` by default)."""
    rows = []
    for name, case in (ND_CASES if cases is None else cases).items():
        torch.manual_seed(0)
        static = case["conv"](case["cin"], case["cout"], case["kernel"], padding=1, bias=False)
        pair = {"static": static, "pedconv": case["layer"].from_conv(static)}
        mods = {k: m.to(current_runtime().device) for k, m in pair.items()}
        row: dict = dict(case=name, input=list(case["input"]))
        for mode in ("train", "eval", "eval_b1"):
            shape = list(case["input"])
            if mode == "eval_b1":
                shape[0] = 1
            x = current_runtime().randn(*shape)
            if mode == "train":
                xg = x.requires_grad_(True)
                fns: dict[str, Callable[[], object]] = {k: _train_step(m.train(), xg) for k, m in mods.items()}
            else:
                fns = {k: inference_call(m.eval(), x) for k, m in mods.items()}
            times = time_interleaved(fns, reps)
            row[mode] = {k: v / times["static"] for k, v in times.items()}
            row[f"{mode}_static_ms"] = 1e3 * times["static"]
        rows.append(row)
        log(f"{name} {tuple(case['input'])}: " + "  ".join(f"{m} {row[m]['pedconv']:.2f}x"
                                                           for m in ("train", "eval", "eval_b1")))
    return rows


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv bench`` options, added to ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--quick"]).quick
    True
    """
    p = parser or argparse.ArgumentParser(prog="pedconv bench", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few shapes, small batch: a CI smoke run (< 3 min)")
    p.add_argument("--batch", type=positive_int, default=32, help="layer-level batch for train and eval")
    p.add_argument("--reps", type=positive_int, default=5, help="timed rounds per measurement (median)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    p.add_argument("--archs", nargs="+", default=["resnet50", "mobilenet_v2"])
    p.add_argument("--skip-layers", action="store_true")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--skip-small", action="store_true", help="leave out the CIFAR-style ResNet-20 section")
    p.add_argument("--skip-nd", action="store_true", help="leave out the 1-D and 3-D layer section")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="independent repeats of the model and small-network sections (median and range)")
    p.add_argument("--compile", action="store_true",
                   help="run the model and small-network sections with both models under torch.compile")
    p.add_argument("--no-naive", action="store_true", help="leave out the authors' (slow) formulation")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where every contestant runs")
    p.add_argument("--amp", choices=("bfloat16", "float16"), default=None,
                   help="run every contestant under torch.autocast with this dtype (default: float32)")
    p.add_argument("--strategies", action="store_true",
                   help="model section: also PEDConv with each execution strategy forced")
    p.add_argument("--small-contestants", nargs="+", choices=[k for k in SMALL_MODELS if k != "static"],
                   default=None, help="small-network section: these contestants only (default: all)")
    p.add_argument("--compile-mode", default=None,
                   help="with --compile: torch.compile's mode (e.g. reduce-overhead, CUDA graphs on a GPU)")
    p.add_argument("--peers", action="store_true",
                   help="model section: also the registered CondConv / DY-Conv / ODConv / KernelWarehouse / DCD / "
                        "WeightNet versions of each architecture")
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="output prefix (.md, .json, .png)")
    return p


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark that parsed ``args`` describe; returns ``meta``, ``layers`` and ``models`` rows."""
    from ..training.distributed import resolve_device

    runtime = Runtime(resolve_device(getattr(args, "device", "cpu")),
                      getattr(torch, args.amp) if getattr(args, "amp", None) else None)
    with use_runtime(runtime):
        return _run_benchmark(args, runtime)


def _check_options(args: argparse.Namespace) -> None:
    """Options that would do nothing in this run are usage errors, not silently ignored."""
    unused = [
        ("--compile-mode", getattr(args, "compile_mode", None), not args.compile, "needs --compile"),
        ("--small-contestants", getattr(args, "small_contestants", None), args.skip_small,
         "has no effect with --skip-small"),
        ("--strategies", getattr(args, "strategies", False), args.skip_models, "has no effect with --skip-models"),
        ("--peers", getattr(args, "peers", False), args.skip_models, "has no effect with --skip-models"),
    ]
    for flag, value, idle, why in unused:
        if value and idle:
            raise UsageError(f"{flag} {why}")


def _run_benchmark(args: argparse.Namespace, runtime: Runtime) -> dict[str, Any]:
    _check_options(args)
    torch.set_num_threads(args.threads)
    layer_kw: dict[str, Any]
    model_kw: dict[str, Any]
    small_kw: dict[str, Any]
    if args.quick:
        layer_kw = dict(batch=4, reps=2, image_size=112, max_shapes=3)
        model_kw = dict(specs=(("resnet18", 4),), reps=1, image_size=112, eval_batch=4)
        small_kw = dict(widths=(8,), batch=16, reps=1, repeats=1)
    else:
        layer_kw = dict(batch=args.batch, reps=args.reps)
        model_kw = dict(reps=max(2, args.reps // 2), repeats=args.repeats)
        small_kw = dict(reps=args.reps, repeats=args.repeats)
    started = time.time()
    layers = [] if args.skip_layers or args.compile else bench_layers(
        args.archs, include_naive=not args.no_naive, **layer_kw)
    models = [] if args.skip_models else bench_models(
        include_naive=not args.no_naive, compile=args.compile, strategies=getattr(args, "strategies", False),
        peers=getattr(args, "peers", False), **model_kw)
    small = [] if args.skip_small else bench_small(
        compile=args.compile, contestants=getattr(args, "small_contestants", None),
        compile_mode=getattr(args, "compile_mode", None), **small_kw)
    quick_nd = {k: dict(c, input=(2, *c["input"][1:2], *(min(n, 8) for n in c["input"][2:])))
                for k, c in ND_CASES.items()}
    nd = [] if args.skip_nd or args.compile else bench_nd(
        reps=1 if args.quick else args.reps, cases=quick_nd if args.quick else None)
    meta = dict(
        machine=machine_description(), device=runtime.describe(), threads=args.threads, torch=torch.__version__,
        date=time.strftime("%Y-%m-%d"),
        quick=args.quick, seconds=round(time.time() - started),
        layer_settings={k: str(v) for k, v in layer_kw.items()},
        model_settings={k: str(v) for k, v in model_kw.items()},
        small_settings={k: str(v) for k, v in small_kw.items()}, compile=args.compile,
    )
    return dict(meta=meta, layers=layers, models=models, small=small, nd=nd)


def run(args: argparse.Namespace) -> int:
    """``pedconv bench`` on parsed options: benchmark, print the tables, write ``<out>.json/.md/.png``."""
    result = run_benchmark(args)
    md = (f"Device: {result['meta']['device']}; torch {result['meta']['torch']}; {result['meta']['date']}\n\n"
          + markdown_layers_models(result["layers"], result["models"]) + markdown_small(result["small"], result["nd"]))
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(result, indent=1))
    atomic_write_text(args.out.with_suffix(".md"), md)
    plotted = plot_layers(result["layers"], args.out.with_suffix(".png"))
    print(md)
    print(f"wrote {args.out}.json, {args.out}.md"
          + (f", {args.out}.png" if plotted else " (no PNG: needs matplotlib and layer rows)"))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pedconv bench`` entry point: the exit status."""
    from ..cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
