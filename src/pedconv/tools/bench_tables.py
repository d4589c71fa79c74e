"""The tables and plot of ``pedconv bench``: layer and model ratios to static, small networks, 1-D/3-D."""

from __future__ import annotations

import math
from pathlib import Path

from ..utils.reporting import markdown_table, pyplot, save_figure

__all__ = ["layer_names", "markdown_layers_models", "markdown_small", "plot_layers", "with_range"]


# ----------------------------------------------------------------------------- ``pedconv bench``
def with_range(row: dict, mode: str, name: str) -> str:
    lo, hi = row.get(f"{mode}_range", {}).get(name, (None, None))
    return f"{row[mode][name]:.2f}" + ("" if lo is None or lo == hi else f" ({lo:.2f}-{hi:.2f})")


def markdown_small(small_rows: list[dict], nd_rows: list[dict]) -> str:
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


def layer_names(layer_rows: list[dict]) -> list[str]:
    """Every contestant of any layer row (KernelWarehouse has no depthwise or grouped layers)."""
    return list(dict.fromkeys(k for r in layer_rows for k in r["train"] if k != "static"))


def markdown_layers_models(layer_rows: list[dict], model_rows: list[dict]) -> str:
    parts = []
    if layer_rows:
        names = layer_names(layer_rows)
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
             *(with_range(r, m, n) for m in ("train", "eval", "eval_b1")), f"{r['mem'][n]:.2f}",
             *([f"{r['peak_mem'][n]:.2f}"] if peak else []), f"{r['train_static_s']:.3f}"]
            for r in model_rows for n in names]))
    return "".join(parts) or "\n"


def plot_layers(layer_rows: list[dict], path: Path) -> bool:
    plt = pyplot()
    if plt is None or not layer_rows:
        return False
    names = layer_names(layer_rows)
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
