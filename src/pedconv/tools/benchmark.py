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
import contextlib
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torchvision

from ..baselines import CondConv2d, DyConv2d, ODConv2d
from ..baselines.kernelwarehouse import KernelWarehouse, KWConv2d
from ..convert import convert
from ..errors import UsageError
from ..execution import STRATEGIES
from ..execution.fused import AVAILABLE as TRITON_AVAILABLE
from ..method import PEDConv1d, PEDConv2d, PEDConv3d
from ..method.infomax import infomax_loss
from ..utils.atomic import atomic_write_text
from ..utils.options import positive_int
from ..utils.reporting import machine_description, markdown_table, pyplot, save_figure

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


@dataclass
class Runtime:
    """Where the benchmark runs: the device of every model and input, and the autocast dtype.

    ``pedconv bench --device cuda --amp bfloat16`` sets it for the whole run (:func:`use_runtime`);
    timing synchronises the device around every timed call, so asynchronous CUDA work is counted.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: Optional[torch.dtype] = None

    def autocast(self) -> Any:
        """``torch.autocast`` on the device when ``amp`` is set, else a null context."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device)

    def randint(self, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, high, shape, device=self.device)

    def strategies(self, include_naive: bool = False) -> list[str]:
        """The strategies worth timing here: not the reference ``"loop"``, ``"naive"`` only on
        request, ``"triton"`` only on CUDA (elsewhere it is Triton's interpreter: a test tool).

        Example:
            >>> "triton" in Runtime().strategies(), "loop" in Runtime().strategies()
            (False, False)
        """
        return [k for k in STRATEGIES if k != "loop" and (include_naive or k != "naive")
                and (k != "triton" or (self.device.type == "cuda" and TRITON_AVAILABLE))]

    def describe(self) -> str:
        """The device in words (the GPU's name on CUDA) and the precision."""
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else machine_description()
        return f"{name}, {'autocast ' + str(self.amp).replace('torch.', '') if self.amp else 'float32'}"


_runtime = Runtime()


@contextlib.contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Run the benchmark functions of this module on ``runtime`` inside the ``with`` block.

    >>> with use_runtime(Runtime(amp=torch.bfloat16)) as rt:
    ...     rt.randn(2, 3).device.type
    'cpu'
    """
    global _runtime
    previous, _runtime = _runtime, runtime
    try:
        yield runtime
    finally:
        _runtime = previous


def _peak_bytes(fn: Callable[[], object]) -> Optional[int]:
    """Peak CUDA memory allocated while running ``fn`` (None on other devices)."""
    if _runtime.device.type != "cuda":
        return None
    _runtime.sync()
    torch.cuda.reset_peak_memory_stats(_runtime.device)
    base = torch.cuda.memory_allocated(_runtime.device)
    fn()
    _runtime.sync()
    return torch.cuda.max_memory_allocated(_runtime.device) - base


def _saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes autograd saves for backward while running ``fn`` (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def _call(m: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``m(x)`` as a function of no arguments (``m`` and ``x`` bound now, not when it is called)."""
    return lambda: m(x)


def _inference(m: nn.Module, x: torch.Tensor, set_eval: bool = False) -> Callable[[], object]:
    """``m(x)`` under ``torch.inference_mode`` (after ``m.eval()`` when ``set_eval``), as a function."""
    def infer() -> object:
        if set_eval:
            m.eval()
        with torch.inference_mode(), _runtime.autocast():
            return m(x)

    return infer


def _sgd_step(m: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor) -> Callable[[], object]:
    """One training step of ``m`` (cross-entropy + info-max term, SGD update) as a function."""
    def step() -> object:
        m.train()
        with _runtime.autocast():
            loss = nn.functional.cross_entropy(m(x), target) + 1e-3 * infomax_loss(m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def _spread(fns: dict[str, Callable[[], object]], reps: int, repeats: int) -> dict[str, list[float]]:
    """``repeats`` independent interleaved measurements: each contestant's time ratio to
    ``"static"`` per repeat (the spread that one figure hides)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        times = time_interleaved(fns, reps)
        for k, v in times.items():
            out[k].append(v / times["static"])
    return out


def _summary(ratios: list[float]) -> dict[str, float]:
    """Median, min and max of repeated ratios."""
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def _record(row: dict, mode: str, fns: dict[str, Callable[[], object]], reps: int, repeats: int) -> float:
    """Time ``fns`` ``repeats`` times into ``row[mode]`` (median ratio to static) and
    ``row[mode + "_range"]`` (min, max); returns static's median seconds of the last repeat."""
    ratios: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        times = time_interleaved(fns, reps)
        for k, v in times.items():
            ratios[k].append(v / times["static"])
    row[mode] = {k: statistics.median(v) for k, v in ratios.items()}
    row[f"{mode}_range"] = {k: [min(v), max(v)] for k, v in ratios.items()}
    return times["static"]


def _compiled(models: dict[str, nn.Module], enabled: bool, mode: Optional[str] = None
              ) -> tuple[dict[str, nn.Module], float]:
    """``models`` under ``torch.compile`` (``mode``: e.g. ``"reduce-overhead"``, CUDA graphs) when
    ``enabled`` (compilation happens at the first call, inside the warm-up), and the seconds that
    ``torch.compile`` itself took (0 if not enabled)."""
    if not enabled:
        return models, 0.0
    t0 = time.perf_counter()
    out = {k: torch.compile(m, mode=mode) for k, m in models.items()}
    return out, time.perf_counter() - t0  # type: ignore[return-value]


def _first_calls(fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Run each function once (the warm-up, where ``torch.compile`` compiles); seconds each."""
    out = {}
    for k, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        out[k] = time.perf_counter() - t0
    return out


def time_interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function over ``reps`` rounds, each round calling every function
    once in turn (so that load drifts hit all contestants alike), after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            _runtime.sync()
            t0 = time.perf_counter()
            fn()
            _runtime.sync()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _layer_contestants(s: ConvShape, include_naive: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    args = (s.cin, s.cout, s.kernel)
    kw = dict(stride=s.stride, padding=s.padding, groups=s.groups, bias=False)
    static = nn.Conv2d(*args, **kw)  # type: ignore[arg-type]
    out: dict[str, nn.Module] = {"static": static, "pedconv": PEDConv2d.from_conv(static)}
    for strat in _runtime.strategies(include_naive):
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
        with _runtime.autocast():
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
            mods = {k: m.to(_runtime.device) for k, m in _layer_contestants(s, include_naive).items()}
            row: dict = dict(arch=arch, shape=s.label(), kind=s.kind, **asdict(s))
            for mode, b in (("train", batch), ("eval", batch), ("eval_b1", 1)):
                x = _runtime.randn(b, s.cin, s.height, s.width)
                if mode == "train":
                    for m in mods.values():
                        m.train()
                    xg = x.requires_grad_(True)
                    fns: dict[str, Callable[[], object]] = {k: _train_step(m, xg) for k, m in mods.items()}
                    mem = {k: _saved_bytes(_call(m, xg)) for k, m in mods.items()}
                    row["mem"] = {k: v / mem["static"] for k, v in mem.items()}
                else:
                    for m in mods.values():
                        m.eval()
                    fns = {k: _inference(m, x) for k, m in mods.items()}
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
                           for k in _runtime.strategies()})
        if peers:
            models.update({peer: create_model(f"{peer}_{arch}") for peer in MODEL_PEERS
                           if f"{peer}_{arch}" in list_models()})
        models = {k: m.to(_runtime.device) for k, m in models.items()}
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
        runners, compile_s = _compiled(models, compile)
        row: dict = dict(arch=arch, train_batch=train_batch, eval_batch=eval_batch, compile=compile)
        x = _runtime.randn(train_batch, 3, image_size, image_size)
        target = _runtime.randint(1000, (train_batch,))

        fns = {k: _sgd_step(m, opts[k], x, target) for k, m in runners.items()}
        if compile:
            row["train_first_call_s"] = _first_calls(fns)
        row["train_static_s"] = _record(row, "train", fns, reps, repeats)
        mem = {k: _saved_bytes(_call(m.train(), x)) for k, m in models.items()}
        row["mem"] = {k: v / mem["static"] for k, v in mem.items()}
        row["mem_static_mb"] = mem["static"] / 2**20
        peak = {k: _peak_bytes(fn) for k, fn in fns.items()}
        if peak["static"]:
            row["peak_mem"] = {k: v / peak["static"] for k, v in peak.items() if v is not None}
            row["peak_mem_static_mb"] = peak["static"] / 2**20
        for mode, b in (("eval", eval_batch), ("eval_b1", 1)):
            xe = _runtime.randn(b, 3, image_size, image_size)
            fns = {k: _inference(m, xe, set_eval=True) for k, m in runners.items()}
            if compile:
                row[f"{mode}_first_call_s"] = _first_calls(fns)
            row[f"{mode}_static_s"] = _record(row, mode, fns, reps, repeats)
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
    x, target = _runtime.randn(batch, 1, 28, 28), _runtime.randint(10, (batch,))
    chosen = {k: v for k, v in SMALL_MODELS.items() if contestants is None or k == "static" or k in contestants}
    for width in widths:
        models = {}
        for k, name in chosen.items():
            torch.manual_seed(0)
            models[k] = create_model(name, num_classes=10, in_chans=1, width=width).to(_runtime.device)
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
        runners, compile_s = _compiled(models, compile, compile_mode)
        row: dict = dict(width=width, batch=batch, compile=compile and (compile_mode or "default"))
        for mode in ("train", "eval"):
            if mode == "train":
                fns = {k: _sgd_step(m, opts[k], x, target) for k, m in runners.items()}
            else:
                fns = {k: _inference(m, x, set_eval=True) for k, m in runners.items()}
            if compile:
                row[f"{mode}_first_call_s"] = _first_calls(fns)
            ratios = _spread(fns, reps, repeats)
            row[mode] = {k: _summary([1.0 / r for r in v]) for k, v in ratios.items()}
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
        mods = {k: m.to(_runtime.device) for k, m in pair.items()}
        row: dict = dict(case=name, input=list(case["input"]))
        for mode in ("train", "eval", "eval_b1"):
            shape = list(case["input"])
            if mode == "eval_b1":
                shape[0] = 1
            x = _runtime.randn(*shape)
            if mode == "train":
                xg = x.requires_grad_(True)
                fns: dict[str, Callable[[], object]] = {k: _train_step(m.train(), xg) for k, m in mods.items()}
            else:
                fns = {k: _inference(m.eval(), x) for k, m in mods.items()}
            times = time_interleaved(fns, reps)
            row[mode] = {k: v / times["static"] for k, v in times.items()}
            row[f"{mode}_static_ms"] = 1e3 * times["static"]
        rows.append(row)
        log(f"{name} {tuple(case['input'])}: " + "  ".join(f"{m} {row[m]['pedconv']:.2f}x"
                                                           for m in ("train", "eval", "eval_b1")))
    return rows


# ----------------------------------------------------------------------------- ``pedconv bench``
def _with_range(row: dict, mode: str, name: str) -> str:
    lo, hi = row.get(f"{mode}_range", {}).get(name, (None, None))
    return f"{row[mode][name]:.2f}" + ("" if lo is None or lo == hi else f" ({lo:.2f}-{hi:.2f})")


def _markdown_small(small_rows: list[dict], nd_rows: list[dict]) -> str:
    parts = []
    if small_rows:
        names = [k for k in small_rows[0]["train"] if k != "static"]
        header = ["ResNet-20 (B, 1x28x28)", "contestant", "train throughput / static", "eval throughput / static"]
        parts.append("\n### Small networks (throughput as a share of static; median and range over repeats)\n\n"
                     + markdown_table(header, [
                         [f"width {r['width']} (B={r['batch']}"
                          f"{', compiled ' + str(r['compile']) if r['compile'] else ''})", n,
                          *(f"{r[m][n]['median']:.2f} ({r[m][n]['min']:.2f}-{r[m][n]['max']:.2f})"
                            for m in ("train", "eval"))]
                         for r in small_rows for n in names]))
    if nd_rows:
        header = ["case", "input", "train", "eval", "eval B=1", "static train (ms)"]
        parts.append("\n### 1-D and 3-D (time ratio of PEDConv1d/3d to nn.Conv1d/3d)\n\n" + markdown_table(header, [
            [r["case"], "x".join(map(str, r["input"])),
             *(f"{r[m]['pedconv']:.2f}" for m in ("train", "eval", "eval_b1")), f"{r['train_static_ms']:.1f}"]
            for r in nd_rows]))
    return "".join(parts)


def _layer_names(layer_rows: list[dict]) -> list[str]:
    """Every contestant of any layer row (KernelWarehouse has no depthwise or grouped layers)."""
    return list(dict.fromkeys(k for r in layer_rows for k in r["train"] if k != "static"))


def _markdown(layer_rows: list[dict], model_rows: list[dict]) -> str:
    parts = []
    if layer_rows:
        names = _layer_names(layer_rows)
        header = ["net", "shape", "kind", *(f"{n} train / eval / B=1" for n in names), "pedconv mem"]
        parts.append("### Layers (time ratio to static nn.Conv2d; train = fwd+bwd; - : not applicable)\n\n"
                     + markdown_table(header, [
                         [r["arch"], r["shape"], r["kind"],
                          *(f"{r['train'][n]:.2f} / {r['eval'][n]:.2f} / {r['eval_b1'][n]:.2f}" if n in r["train"]
                            else "-" for n in names),
                          f"{r['mem']['pedconv']:.2f}"] for r in layer_rows]))
    if model_rows:
        names = [k for k in model_rows[0]["train"] if k != "static"]
        peak = "peak_mem" in model_rows[0]
        header = ["model", "contestant", "train step", "eval", "eval B=1", "saved-activation memory",
                  *(["peak memory (train)"] if peak else []), "static train step (s)"]
        parts.append("\n### Models (time ratio to the static torchvision model)\n\n" + markdown_table(header, [
            [f"{r['arch']} (train B={r['train_batch']}, eval B={r['eval_batch']}"
             f"{', compiled' if r.get('compile') else ''})", n,
             *(_with_range(r, m, n) for m in ("train", "eval", "eval_b1")), f"{r['mem'][n]:.2f}",
             *([f"{r['peak_mem'][n]:.2f}"] if peak else []), f"{r['train_static_s']:.3f}"]
            for r in model_rows for n in names]))
    return "".join(parts) or "\n"


def _plot(layer_rows: list[dict], path: Path) -> bool:
    plt = pyplot()
    if plt is None or not layer_rows:
        return False
    names = _layer_names(layer_rows)
    fig, axes = plt.subplots(3, 1, figsize=(max(10, 0.45 * len(layer_rows)), 11), sharex=True)
    width = 0.8 / len(names)
    for ax, mode in zip(axes, ("train", "eval", "eval_b1")):
        for i, n in enumerate(names):
            heights = [r[mode].get(n, math.nan) for r in layer_rows]
            ax.bar([j + i * width for j in range(len(layer_rows))], heights, width, label=n)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"{mode}: time / static")
    axes[0].legend(ncol=len(names), fontsize=8)
    axes[-1].set_xticks(range(len(layer_rows)))
    axes[-1].set_xticklabels([f"{r['arch'][:6]} {r['shape']}" for r in layer_rows], rotation=90, fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return True


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
          + _markdown(result["layers"], result["models"]) + _markdown_small(result["small"], result["nd"]))
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(result, indent=1))
    atomic_write_text(args.out.with_suffix(".md"), md)
    plotted = _plot(result["layers"], args.out.with_suffix(".png"))
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
