"""The fused Triton kernels (strategy ``"triton"``) on a GPU: correctness, speed against static
cuDNN, the other strategies and the peers, and the calibration of ``auto``, in one run of at most
8 minutes (``--budget``; each section is written as soon as it finishes).

    python experiments/fused_bench.py                       # on a CUDA machine; writes results/gpu/fused_*
    python experiments/fused_bench.py --device cpu --quick  # a smoke run in Triton's interpreter

Sections (every table is headed by the card's name and the precision):

1. ``fused_correctness``: ``"triton"`` against the per-sample reference on the card, forward and
   every gradient: float64 (max abs error < 1e-9), float32 with TF32 off (1e-4 of the largest
   value), bfloat16 operands against the float32 reference (2e-2); dense, strided, grouped,
   depthwise, 1x1, ranks 1-3, disabled components, 1-D and 3-D.
2. ``fused_ops_bf16``: every distinct convolution of ResNet-18, ResNet-50 and MobileNetV2 at 224 px,
   the convolution alone (its factors given), bfloat16: cuDNN's static ``F.conv2d`` against
   ``"triton"``, ``"materialize"`` and ``"factored"``, forward and forward + backward, as time over
   cuDNN's; the tiles autotuning chose for the fused kernels (edit
   ``pedconv.execution.fused.launch.*_CONFIGS`` from these).
3. ``fused_calibration``: per layer kind, the summed forward + backward time of ``"triton"``
   against the best other strategy per layer (from 2); the kinds where it wins are
   ``AutoThresholds.fused_kinds`` for CUDA. Prints the entry for
   ``pedconv.execution.dispatch.AUTO_THRESHOLDS["cuda"]``.
4. ``fused_models_bf16``: ResNet-50, ResNet-18 and MobileNetV2 (training step, eval, eval at
   batch 1, peak memory): static, PEDConv (``auto`` and every strategy, ``"triton"`` included),
   and the registered CondConv / DY-Conv / ODConv / KernelWarehouse / DCD / WeightNet versions.
5. ``fused_layers_bf16``: the layers of 2 as whole layers (generator included), training step and
   eval: static, PEDConv (``auto``, each strategy), CondConv, DY-Conv, ODConv, KernelWarehouse.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from _sections import Section, run_sections

import pedconv
import pedconv.testing
from pedconv.execution import ConvGeometry
from pedconv.execution.dispatch import LAYER_KINDS, layer_kind
from pedconv.method import CPFactors
from pedconv.tools import benchmark as B
from pedconv.tools.bench_tables import markdown_layers_models
from pedconv.utils.reporting import markdown_table

COMPARED = ("triton", "materialize", "factored")


def _case(device: torch.device, dtype: torch.dtype, batch: int, cin: int, cout: int, kernel: tuple[int, ...],
          groups: int, rank: int, enabled: tuple[bool, bool, bool] = (True, True, True)) -> tuple[Any, ...]:
    torch.manual_seed(0)
    dd: dict[str, Any] = dict(dtype=dtype, device=device, requires_grad=True)
    size = {1: (19,), 2: (11, 9), 3: (5, 6, 5)}[len(kernel)]
    x, w = torch.randn(batch, cin, *size, **dd), torch.randn(cout, cin // groups, *kernel, **dd)
    taps = 1
    for k in kernel:
        taps *= k
    comps = [torch.rand(batch, rank, n, **dd) if on else None
             for n, on in zip((cout, cin // groups, taps), enabled)]
    return x, w, torch.randn(cout, **dd), comps


def correctness(device: torch.device, quick: bool) -> dict[str, Any]:
    """Max error of "triton" against the per-sample reference, per precision, forward and grads."""
    cases = [  # (label, cin, cout, kernel, stride, groups, rank, enabled)
        ("dense 3x3", 32, 48, (3, 3), 1, 1, 1, (True, True, True)),
        ("strided 3x3 R2", 32, 32, (3, 3), 2, 1, 2, (True, True, True)),
        ("grouped g4 R3", 32, 32, (3, 3), 1, 4, 3, (True, True, True)),
        ("depthwise", 32, 32, (3, 3), 1, 32, 1, (True, True, True)),
        ("1x1 strided", 32, 64, (1, 1), 2, 1, 1, (True, True, True)),
        ("gamma+psi only", 32, 32, (3, 3), 1, 1, 2, (True, False, True)),
        ("1-D k5", 16, 16, (5,), 1, 1, 1, (True, True, True)),
        ("3-D 3x3x3", 16, 16, (3, 3, 3), 1, 2, 1, (True, True, True)),
    ]
    precisions = [("float64", torch.float64, 1e-9), ("float32", torch.float32, 1e-4),
                  ("bfloat16", torch.bfloat16, 2e-2)]
    rows = []
    for label, cin, cout, kernel, stride, groups, rank, enabled in cases[:2] if quick else cases:
        for name, dtype, tol in precisions:
            ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            x, w, b, comps = _case(device, dtype, 2 if quick else 6, cin, cout, kernel, groups, rank, enabled)
            ref_in = [t.detach().to(ref_dtype).requires_grad_() if t is not None else None for t in (x, w, b, *comps)]
            geo = ConvGeometry.make(stride, kernel[0] // 2, 1, groups, ndim=len(kernel))
            out = pedconv.execution.dispatch.run_strategy(x, w, b, CPFactors(*comps), geo, "triton")
            ref = pedconv.testing.conv_per_sample(ref_in[0], ref_in[1], ref_in[2], CPFactors(*ref_in[3:]), geo)
            g = torch.randn_like(ref)
            got = torch.autograd.grad(out, [t for t in (x, w, b, *comps) if t is not None], g.to(dtype))
            want = torch.autograd.grad(ref, [t for t in ref_in if t is not None], g)
            errs = [float((o.detach().to(ref_dtype) - r.detach()).abs().max() / r.detach().abs().max().clamp_min(1.0))
                    for o, r in zip([out, *got], [ref, *want])]
            rows.append(dict(case=label, precision=name, max_error=max(errs), ok=max(errs) < tol,
                             tolerance=tol))
    return dict(rows=rows, ok=all(r["ok"] for r in rows))


def _op_fns(s: B.ConvShape, batch: int, device: torch.device, backward: bool) -> dict[str, Callable[[], object]]:
    """The convolution of shape ``s`` alone: cuDNN's static conv and each compared strategy."""
    torch.manual_seed(0)
    dd: dict[str, Any] = dict(dtype=torch.bfloat16, device=device, requires_grad=backward)
    x = torch.randn(batch, s.cin, s.height, s.width, **dd)
    w = torch.randn(s.cout, s.cin // s.groups, s.kernel, s.kernel, **dd)
    comps = [torch.rand(batch, 1, n, **dd) for n in (s.cout, s.cin // s.groups, s.kernel * s.kernel)]
    out = F.conv2d(x.detach(), w.detach(), None, s.stride, s.padding, 1, s.groups)
    g = torch.randn_like(out)

    def run(fn: Callable[[], torch.Tensor]) -> Callable[[], object]:
        if not backward:
            def forward() -> object:
                with torch.no_grad():
                    return fn()
            return forward
        return lambda: fn().backward(g)

    fns = {"cudnn": run(lambda: F.conv2d(x, w, None, s.stride, s.padding, 1, s.groups))}
    for strategy in COMPARED:
        fns[strategy] = run(lambda strategy=strategy: pedconv.pedconv_conv2d(
            x, w, None, *comps, s.stride, s.padding, 1, s.groups, strategy=strategy))
    return fns


def _chosen_tiles(s: B.ConvShape) -> dict[str, str]:
    """The tiles the autotuner chose for this shape's fused kernels (its last call)."""
    from pedconv.execution.fused import launch

    kernels = launch._kernels(False)
    direct = s.cin // s.groups < launch.DIRECT_MAX_CIN_G
    names = (["conv_forward_direct", "conv_backward_input_direct", "conv_backward_weight_direct"] if direct
             else ["conv_forward", "conv_backward_input", "conv_backward_weight"])
    out = {}
    for name in names:
        best = getattr(kernels[name], "best_config", None)
        out[name] = "" if best is None else (" ".join(f"{k[6:]}{v}" for k, v in best.kwargs.items())
                                             + f" w{best.num_warps} s{best.num_stages}")
    return out


def ops(device: torch.device, quick: bool, batch: int, log: Callable[[str], None]) -> dict[str, Any]:
    archs = ("resnet18",) if quick else ("resnet18", "resnet50", "mobilenet_v2")
    rows = []
    for arch in archs:
        shapes = B.conv_shapes(arch, 32 if quick else 224)[: 3 if quick else None]
        for s in shapes:
            row: dict[str, Any] = dict(arch=arch, shape=s.label(), kind=layer_kind(
                torch.empty(s.cout, s.cin // s.groups, s.kernel, s.kernel, device="meta"), s.groups))
            for mode, backward in (("forward", False), ("train", True)):
                times = B.time_interleaved(_op_fns(s, batch, device, backward), reps=1 if quick else 20)
                row[mode] = {k: v / times["cudnn"] for k, v in times.items()}
                row[f"{mode}_cudnn_ms"] = 1e3 * times["cudnn"]
            if device.type == "cuda":
                row["tiles"] = _chosen_tiles(s)
            rows.append(row)
            log(f"{arch:>12} {s.label():>28} [{row['kind']:>9}]  triton fwd {row['forward']['triton']:.2f}x  "
                f"fwd+bwd {row['train']['triton']:.2f}x cuDNN")
    return dict(rows=rows, batch=batch)


def calibrate(op_data: dict[str, Any]) -> dict[str, Any]:
    """Per layer kind: summed fwd+bwd time of "triton" against the best other strategy per layer."""
    kinds = []
    for kind in LAYER_KINDS:
        rows = [r for r in op_data["rows"] if r["kind"] == kind]
        if not rows:
            continue
        fused = sum(r["train"]["triton"] for r in rows)
        other = sum(min(r["train"][k] for k in COMPARED if k != "triton") for r in rows)
        kinds.append(dict(kind=kind, layers=len(rows), triton=fused, best_other=other, fused=fused < other))
    chosen = sorted(k["kind"] for k in kinds if k["fused"])
    kinds_literal = f"frozenset({set(chosen)})" if chosen else "frozenset()"
    entry = ('"cuda": AutoThresholds(<weight_factor>, <small_weight_elements>, "<card>, torch '
             f'{torch.__version__}: experiments/gpu_bench.py + fused_bench.py", fused_kinds={kinds_literal})')
    return dict(kinds=kinds, fused_kinds=chosen, entry=entry)


def _markdown(section: str, data: Any, device: str) -> str:
    head = f"# {section}\n\nDevice: {device}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}\n\n"
    if section == "fused_correctness":
        return head + markdown_table(["case", "precision", "max error (relative to max)", "tolerance", "ok"],
                                     [[r["case"], r["precision"], f"{r['max_error']:.1e}", r["tolerance"], r["ok"]]
                                      for r in data["rows"]]) + "\n"
    if section == "fused_ops_bf16":
        cols = ["net", "shape", "kind", "cuDNN fwd ms", *(f"{k} fwd" for k in COMPARED), "cuDNN fwd+bwd ms",
                *(f"{k} fwd+bwd" for k in COMPARED), "triton tiles (fwd / dx / dW)"]
        body = [[r["arch"], r["shape"], r["kind"], f"{r['forward_cudnn_ms']:.3f}",
                 *(f"{r['forward'][k]:.2f}" for k in COMPARED), f"{r['train_cudnn_ms']:.3f}",
                 *(f"{r['train'][k]:.2f}" for k in COMPARED), " / ".join(r.get("tiles", {}).values())]
                for r in data["rows"]]
        return (head + f"The convolution alone, batch {data['batch']}, bfloat16: time over cuDNN's static conv.\n\n"
                + markdown_table(cols, body) + "\n")
    if section == "fused_calibration":
        return (head + markdown_table(["kind", "layers", "triton (sum of fwd+bwd / cuDNN)", "best other", "fused"],
                                      [[k["kind"], k["layers"], f"{k['triton']:.2f}", f"{k['best_other']:.2f}",
                                        k["fused"]] for k in data["kinds"]])
                + f"\n\nEntry: `{data['entry']}`\n")
    if section == "fused_models_bf16":
        return head + markdown_layers_models([], data) + "\n"
    return head + markdown_layers_models(data, []) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny shapes, one repeat: a smoke run of every section")
    p.add_argument("--budget", type=float, default=450.0, help="seconds after which no section starts")
    p.add_argument("--batch", type=int, default=32, help="batch of the per-layer sections")
    p.add_argument("--out", type=Path, default=Path("results/gpu"))
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda":
        os.environ["TRITON_INTERPRET"] = "1"  # the kernels on CPU tensors: Triton's interpreter
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 is fp32
    batch = 2 if quick else args.batch
    fp32, bf16 = B.Runtime(device), B.Runtime(device, torch.bfloat16)
    ops_data: dict[str, Any] = {}
    specs = (("resnet18", 2),) if quick else (("resnet50", 32), ("resnet18", 64), ("mobilenet_v2", 64))
    sections: list[Section] = [
        ("fused_correctness", fp32, lambda: correctness(device, quick)),
        ("fused_ops_bf16", fp32, lambda: ops_data.setdefault("rows", ops(device, quick, batch, print))),
        ("fused_calibration", fp32, lambda: calibrate(ops_data["rows"])),
        ("fused_models_bf16", bf16, lambda: B.bench_models(
            specs=specs, reps=1 if quick else 10, image_size=32 if quick else 224, eval_batch=2 if quick else 64,
            include_naive=False, strategies=True, peers=not quick, repeats=1 if quick else 2, log=print)),
        ("fused_layers_bf16", bf16, lambda: B.bench_layers(
            ("resnet18",) if quick else ("resnet50", "mobilenet_v2"), batch=batch, reps=1 if quick else 5,
            image_size=32 if quick else 224, max_shapes=2 if quick else None, include_naive=False, log=print)),
    ]

    def describe(name: str, runtime: B.Runtime) -> str:
        if name == "fused_correctness":
            return runtime.describe().replace("float32", "precision per row")
        return runtime.describe().replace("float32", "bfloat16") if name == "fused_ops_bf16" else runtime.describe()

    results = run_sections(sections, args.out, args.budget, _markdown, describe, "fused_summary.json")
    if "fused_calibration" in results:
        print("AUTO_THRESHOLDS fused kinds:", results["fused_calibration"]["entry"], flush=True)
    ok = "fused_correctness" not in results or results["fused_correctness"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
