"""Timing and memory primitives of ``pedconv bench`` and the GPU benchmarks: where and how a
measurement runs (:class:`Runtime`), interleaved timing of several contestants, saved-for-backward
bytes, and the ratio records the tables are made of."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..execution import STRATEGIES
from ..execution.fused import AVAILABLE as TRITON_AVAILABLE
from ..method.infomax import infomax_loss
from ..utils.reporting import machine_description

__all__ = ["Runtime", "compiled_models", "current_runtime", "first_calls", "forward_call", "inference_call",
           "peak_bytes", "ratio_summary", "record_ratios", "saved_bytes", "sgd_step_call", "time_interleaved",
           "time_spread", "use_runtime"]


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


def current_runtime() -> Runtime:
    """The :class:`Runtime` measurements use now (set by :func:`use_runtime`; default: CPU, float32).

    >>> current_runtime().device.type
    'cpu'
    """
    return _runtime


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


def peak_bytes(fn: Callable[[], object]) -> Optional[int]:
    """Peak CUDA memory allocated while running ``fn`` (None on other devices)."""
    if _runtime.device.type != "cuda":
        return None
    _runtime.sync()
    torch.cuda.reset_peak_memory_stats(_runtime.device)
    base = torch.cuda.memory_allocated(_runtime.device)
    fn()
    _runtime.sync()
    return torch.cuda.max_memory_allocated(_runtime.device) - base


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
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


def forward_call(m: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``m(x)`` as a function of no arguments (``m`` and ``x`` bound now, not when it is called)."""
    return lambda: m(x)


def inference_call(m: nn.Module, x: torch.Tensor, set_eval: bool = False) -> Callable[[], object]:
    """``m(x)`` under ``torch.inference_mode`` (after ``m.eval()`` when ``set_eval``), as a function."""
    def infer() -> object:
        if set_eval:
            m.eval()
        with torch.inference_mode(), _runtime.autocast():
            return m(x)

    return infer


def sgd_step_call(m: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor
                  ) -> Callable[[], object]:
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


def time_spread(fns: dict[str, Callable[[], object]], reps: int, repeats: int) -> dict[str, list[float]]:
    """``repeats`` independent interleaved measurements: each contestant's time ratio to
    ``"static"`` per repeat (the spread that one figure hides)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        times = time_interleaved(fns, reps)
        for k, v in times.items():
            out[k].append(v / times["static"])
    return out


def ratio_summary(ratios: list[float]) -> dict[str, float]:
    """Median, min and max of repeated ratios."""
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def record_ratios(row: dict, mode: str, fns: dict[str, Callable[[], object]], reps: int, repeats: int) -> float:
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


def compiled_models(models: dict[str, nn.Module], enabled: bool, mode: Optional[str] = None
              ) -> tuple[dict[str, nn.Module], float]:
    """``models`` under ``torch.compile`` (``mode``: e.g. ``"reduce-overhead"``, CUDA graphs) when
    ``enabled`` (compilation happens at the first call, inside the warm-up), and the seconds that
    ``torch.compile`` itself took (0 if not enabled)."""
    if not enabled:
        return models, 0.0
    t0 = time.perf_counter()
    out = {k: torch.compile(m, mode=mode) for k, m in models.items()}
    return out, time.perf_counter() - t0  # type: ignore[return-value]


def first_calls(fns: dict[str, Callable[[], object]]) -> dict[str, float]:
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
