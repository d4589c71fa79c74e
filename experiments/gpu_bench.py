"""GPU numbers in one run: speed and memory of PEDConv against static and the peers, CUDA
correctness, and the calibration of ``auto`` for CUDA. Prepared to fit one device call (< 8 min).

    python experiments/gpu_bench.py                      # on a CUDA machine; writes results/gpu/
    python experiments/gpu_bench.py --device cpu --quick  # the same code on tiny shapes (a smoke run)

Sections, each written as soon as it finishes (``results/gpu/<section>.md|json``), each table
headed by the card's name and the precision:

1. ``correctness``: every execution strategy against the per-sample reference on the device, in
   float64, forward and every gradient (dense, strided, grouped, depthwise, 1x1; rank 1 and 2).
2. ``models_fp32`` / ``models_bf16``: ResNet-18, ResNet-50 and MobileNetV2 (torchvision; train
   step, eval, eval at batch 1; peak memory of a training step): static, PEDConv (``auto`` and every
   strategy forced), and the registered CondConv / DY-Conv / ODConv / KernelWarehouse / DCD /
   WeightNet versions of the architecture.
3. ``small_fp32`` / ``small_bf16``: the CIFAR-style ResNet-20 at widths 8 and 16, batch 128
   (static, PEDConv, CondConv, DY-Conv, ODConv, KernelWarehouse), and ``small_compiled``: the same
   under ``torch.compile(mode="reduce-overhead")`` (inductor + CUDA graphs).
4. ``auto_calibration``: every distinct layer shape of ResNet-18/50 and MobileNetV2 (training
   step, batch 32) with each strategy; the fitted ``AutoThresholds`` for CUDA (paste the printed
   entry into ``pedconv.execution.dispatch.AUTO_THRESHOLDS``) and which strategy each layer gets.

``--budget S`` skips the sections that would start after S seconds (they are named as skipped).
The fused Triton kernels (strategy ``"triton"``) have their own run, ``experiments/fused_bench.py``;
here they are checked for correctness and timed in the model sections (``ped_triton``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
from _sections import Section, run_sections

import pedconv
import pedconv.testing
from pedconv.execution import ConvGeometry
from pedconv.execution.dispatch import AutoThresholds
from pedconv.method import CPFactors
from pedconv.tools import benchmark as B
from pedconv.tools.bench_tables import markdown_layers_models, markdown_small
from pedconv.utils.reporting import markdown_table

STRATEGY_NAMES = ("factored", "materialize", "hybrid")


def correctness(device: torch.device, quick: bool) -> dict[str, Any]:
    """Max abs error of every strategy against the per-sample reference, float64, fwd and grads."""
    cases = [  # (cin, cout, kernel, stride, groups, rank)
        (8, 16, 3, 1, 1, 1), (8, 16, 3, 2, 1, 2), (8, 8, 3, 1, 8, 1), (16, 8, 1, 1, 1, 1), (8, 8, 3, 1, 2, 1),
    ]
    rows = []
    for cin, cout, k, stride, groups, rank in cases[:2] if quick else cases:
        torch.manual_seed(0)
        dd: dict[str, Any] = dict(dtype=torch.float64, device=device)
        x = torch.randn(5, cin, 9, 9, **dd, requires_grad=True)
        w = torch.randn(cout, cin // groups, k, k, **dd, requires_grad=True)
        comps = [torch.rand(5, rank, n, **dd, requires_grad=True) for n in (cout, cin // groups, k * k)]
        geo = ConvGeometry.make(stride, k // 2, 1, groups)
        ref = pedconv.testing.conv2d_per_sample(x, w, None, CPFactors(*comps), geo)
        g = torch.randn_like(ref)
        ref_grads = torch.autograd.grad(ref, [x, w, *comps], g)
        fused = ("triton",) if device.type == "cuda" else ()  # elsewhere the interpreter: see fused_bench.py
        for s in (*STRATEGY_NAMES, *fused, "naive", "auto"):
            y = pedconv.pedconv_conv2d(x, w, None, *comps, stride, k // 2, 1, groups, strategy=s)
            grads = torch.autograd.grad(y, [x, w, *comps], g)
            diffs = [(y - ref).detach(), *(a - b for a, b in zip(grads, ref_grads))]
            err = max(float(d.abs().max()) for d in diffs)
            rows.append(dict(case=f"{cin}->{cout} k{k} s{stride} g{groups} R{rank}", strategy=s, max_abs_error=err,
                             ok=err < 1e-9))
    return dict(rows=rows, ok=all(r["ok"] for r in rows))


def _fit_thresholds(shapes: list[dict]) -> tuple[AutoThresholds, float]:
    """The (weight_factor, small_weight_elements) pair that minimises the summed training time of
    the measured layers when ``auto`` follows it, and that total relative to always-the-best."""
    best_total = sum(min(r["times"][s] for s in ("factored", "materialize")) for r in shapes)
    candidates = []
    for factor in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0):
        for small in (0, 1 << 21, 1 << 22, 1 << 23, 1 << 24, 1 << 25):
            total = sum(r["times"][_choice(r, factor, small)] for r in shapes)
            candidates.append((total, -factor, small))
    total, neg_factor, small = min(candidates)
    return AutoThresholds(-neg_factor, small, "fitted by experiments/gpu_bench.py"), total / best_total


def _choice(r: dict, factor: float, small: int) -> str:
    """What ``select_strategy`` picks for layer row ``r`` with these thresholds (batch > 1)."""
    if r["groups"] == r["cin"]:
        return "materialize"
    if factor * r["weight_elems"] <= r["act_elems"]:
        return "materialize"
    return "materialize" if r["kernel"] > 1 and r["weight_elems"] * 128 <= small else "factored"


def calibration(quick: bool) -> dict[str, Any]:
    """Every layer shape with each strategy (training step, batch 32), the fitted thresholds."""
    archs = ("resnet18",) if quick else ("resnet18", "resnet50", "mobilenet_v2")
    rows = B.bench_layers(archs, batch=2 if quick else 32, reps=1 if quick else 5, image_size=32 if quick else 224,
                          max_shapes=2 if quick else None, include_naive=False, log=lambda s: None)
    shapes = []
    for r in rows:
        s = B.ConvShape(r["cin"], r["cout"], r["kernel"], r["stride"], r["padding"], r["groups"], r["height"],
                        r["width"])
        taps, cin_g = s.kernel**2, s.cin // s.groups
        out_px = math.ceil(s.height / s.stride) * math.ceil(s.width / s.stride)
        if taps > 1:
            act = taps * s.cout * s.height * s.width if s.groups == 1 and s.stride == 1 else s.cin * taps * out_px
        else:
            act = s.cin * s.height * s.width + s.cout * out_px
        times = {k: r["train"][f"ped_{k}"] for k in STRATEGY_NAMES}
        shapes.append(dict(arch=r["arch"], shape=r["shape"], kind=r["kind"], cin=s.cin, groups=s.groups,
                           kernel=s.kernel, weight_elems=s.cout * cin_g * taps, act_elems=act, times=times,
                           auto_now=r["train"]["pedconv"], best=min(times, key=times.__getitem__)))
    fitted, loss = _fit_thresholds(shapes)
    for r in shapes:
        r["auto_fitted"] = _choice(r, fitted.weight_factor, fitted.small_weight_elements)
    return dict(shapes=shapes, fitted=fitted.__dict__, fitted_vs_best=loss,
                entry=f'"cuda": AutoThresholds({fitted.weight_factor}, {fitted.small_weight_elements}, '
                      f'"<card>, torch {torch.__version__}: experiments/gpu_bench.py")')


def _markdown(section: str, data: Any, device: str) -> str:
    head = f"# {section}\n\nDevice: {device}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}\n\n"
    if section == "correctness":
        return head + markdown_table(["case", "strategy", "max abs error (float64)", "ok"],
                                     [[r["case"], r["strategy"], f"{r['max_abs_error']:.1e}", r["ok"]]
                                      for r in data["rows"]]) + "\n"
    if section.startswith("models"):
        return head + markdown_layers_models([], data) + "\n"
    if section.startswith("small"):
        return head + markdown_small(data, []) + "\n"
    table = markdown_table(
        ["net", "shape", "kind", *(f"{k} (time / static)" for k in STRATEGY_NAMES), "best", "fitted auto"],
        [[r["arch"], r["shape"], r["kind"], *(f"{r['times'][k]:.2f}" for k in STRATEGY_NAMES), r["best"],
          r["auto_fitted"]] for r in data["shapes"]])
    return (head + table + f"\n\nFitted: `{data['entry']}`; the layers' summed training time with it is "
            f"{data['fitted_vs_best']:.3f}x that of the best strategy per layer.\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny shapes and one repeat: a smoke run of every section")
    p.add_argument("--budget", type=float, default=450.0, help="seconds after which no section starts")
    p.add_argument("--out", type=Path, default=Path("results/gpu"))
    args = p.parse_args()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 is fp32
    specs = (("resnet18", 2),) if quick else (("resnet18", 64), ("resnet50", 32), ("mobilenet_v2", 64))
    model_kw = dict(specs=specs, reps=1 if quick else 10, image_size=32 if quick else 224,
                    eval_batch=2 if quick else 64, include_naive=False, strategies=True, peers=not quick,
                    repeats=1 if quick else 2, log=print)
    small_kw = dict(widths=(4,) if quick else (8, 16), batch=8 if quick else 128, reps=1 if quick else 10,
                    repeats=1 if quick else 3, log=print)
    fp32, bf16 = B.Runtime(device), B.Runtime(device, torch.bfloat16)
    sections: list[Section] = [
        ("correctness", fp32, lambda: correctness(device, quick)),
        ("models_bf16", bf16, lambda: B.bench_models(**model_kw)),  # type: ignore[arg-type]
        ("small_bf16", bf16, lambda: B.bench_small(**small_kw)),  # type: ignore[arg-type]
        ("small_compiled", bf16, lambda: B.bench_small(
            **small_kw, compile=True, compile_mode=None if device.type == "cpu" else "reduce-overhead",  # type: ignore[arg-type]
            contestants=("pedconv", "condconv4"))),
        ("auto_calibration", fp32, lambda: calibration(quick)),
        ("models_fp32", fp32, lambda: B.bench_models(**model_kw)),  # type: ignore[arg-type]
        ("small_fp32", fp32, lambda: B.bench_small(**small_kw)),  # type: ignore[arg-type]
    ]
    results = run_sections(sections, args.out, args.budget, _markdown)
    if "auto_calibration" in results:
        print("AUTO_THRESHOLDS entry:", results["auto_calibration"]["entry"], flush=True)
    ok = "correctness" not in results or results["correctness"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
