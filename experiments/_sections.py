"""The section runner the GPU scripts share (``gpu_bench.py``, ``fused_bench.py``): each section
runs under its runtime (device, precision) unless the time budget is spent, and is written at
once as ``<out>/<name>.json`` and ``.md``, so a run cut short keeps what it finished."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from pedconv.tools import benchmark as B
from pedconv.utils.atomic import atomic_write_text

Section = tuple[str, B.Runtime, Callable[[], Any]]


def run_sections(sections: list[Section], out: Path, budget: float, markdown: Callable[[str, Any, str], str],
                 describe: Callable[[str, B.Runtime], str] = lambda name, runtime: runtime.describe(),
                 summary_name: str = "summary.json") -> dict[str, Any]:
    """Run ``sections`` in order; returns ``{name: data}`` of those that ran. ``describe`` heads
    each table (the device and precision); ``summary_name``: the file listing each section's time."""
    started, results, summary = time.perf_counter(), {}, {}
    for name, runtime, fn in sections:
        if time.perf_counter() - started > budget:
            summary[name] = "skipped (budget)"
            print(f"{name}: skipped, past the {budget:.0f} s budget", flush=True)
            continue
        t0 = time.perf_counter()
        with B.use_runtime(runtime):
            results[name] = data = fn()
        desc = describe(name, runtime)
        atomic_write_text(out / f"{name}.json", json.dumps(dict(device=desc, data=data), indent=1, default=str))
        atomic_write_text(out / f"{name}.md", markdown(name, data, desc))
        summary[name] = f"{time.perf_counter() - t0:.0f} s"
        print(f"{name}: done in {summary[name]}", flush=True)
    atomic_write_text(out / summary_name, json.dumps(summary, indent=1))
    return results
