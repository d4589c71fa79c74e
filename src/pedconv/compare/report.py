"""A comparison's table, JSON and plots: per model, params, MACs, top-1 mean ± std over seeds,
the paired differences to the first model, speed and training time."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from ..tools.flops import format_count, profile_model
from ..utils.atomic import atomic_write_text
from ..utils.reporting import machine_description, markdown_table, pyplot, save_figure
from .plan import Plan

__all__ = [
    "REPORTS",
    "markdown",
    "mean_std",
    "metric_label",
    "plot",
    "plot_training_curves",
    "profile_record",
    "report_meta",
    "summarize",
    "write_reports",
]


# What a comparison writes in its output folder.
REPORTS = ("compare.md", "compare.json", "compare.png", "curves.png")


def mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """Mean and sample std; the std of one value is None (unknown, not 0). A value a run could not
    compute (nan: COCO's AP_L without large objects) is left out.

    >>> mean_std([1.0, 3.0]), mean_std([2.0, float("nan")])
    ((2.0, 1.4142135623730951), (2.0, None))
    """
    values = [v for v in values if v == v]
    if not values:
        return math.nan, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def profile_record(record: dict[str, Any]) -> tuple[int, int]:
    """Parameters and MACs of a run's model at the input size the run used."""
    from ..models import create_model

    margs = record["model_args"]
    model = create_model(margs["name"], num_classes=margs["num_classes"], **margs["kwargs"])
    prof = profile_model(model, (1, *record["input_size"]))
    return prof.params, prof.macs


def summarize(records: list[dict[str, Any]], metric: str = "val_top1", also: Sequence[str] = ()
              ) -> list[dict[str, Any]]:
    """One row per model: params, MACs (at the runs' input size), ``metric`` (the task's: top-1,
    AP, mIoU, PGD accuracy) mean/std over seeds, images per second, training time, and the metric
    minus the first model's (the reference) paired by seed. Rows keep the metric's name under
    ``metric`` and its numbers under ``metric_mean``/``metric_std``/``metric_runs``; the task's
    other metrics ``also`` (AP50, aAcc...) under ``metrics``, each ``{"mean", "std", "runs"}``."""
    rows = []
    labels = list(dict.fromkeys(r["model"] for r in records))
    reference = {r["seed"]: r["final"][metric] for r in records if r["model"] == labels[0]}
    # Speeds and times are compared only between runs trained on the one device type of the
    # first run (a study trained in slices may have put some runs on a GPU, or moved one there).
    timed_on = devices_of(next(r for r in records if r["model"] == labels[0]))
    for label in labels:
        runs = [r for r in records if r["model"] == label]
        values = [r["final"][metric] for r in runs]
        deltas = [r["final"][metric] - reference[r["seed"]] for r in runs if r["seed"] in reference]
        params, macs = profile_record(runs[0])
        m, s = mean_std(values)
        rows.append({"model": label, "role": role_of(runs[0], label == labels[0]), "params": params,
                     "macs": macs, "metric": metric, "metric_mean": m, "metric_std": s, "metric_runs": values,
                     "seeds": [r["seed"] for r in runs], "metrics": _other_metrics(runs, also, metric),
                     "delta_vs_reference": deltas, "devices": [devices_of(r) for r in runs], "timed_on": timed_on,
                     **timings([r for r in runs if devices_of(r) == timed_on and "+" not in timed_on])})
    return rows


def _other_metrics(runs: list[dict[str, Any]], names: Sequence[str], primary: str) -> dict[str, dict[str, Any]]:
    """Mean, std and per-seed values of the metrics ``names`` (but ``primary``) the runs have."""
    out = {}
    for name in names:
        values = [v for r in runs if isinstance(v := r["final"].get(name), (int, float)) and v == v]  # nan: n/a
        if name != primary and values:
            mean, std = mean_std(values)
            out[name] = {"mean": mean, "std": std, "runs": values}
    return out


def devices_of(record: dict[str, Any]) -> str:
    """Where a run trained: ``cpu``, ``cuda``, ``cuda+cpu`` (moved while resumed), ``?`` if unknown."""
    return "+".join(record.get("devices") or ["?"])


def timings(runs: list[dict[str, Any]]) -> dict[str, Optional[float]]:
    """Mean images/s and training time of ``runs``; None each without a run."""
    if not runs:
        return dict.fromkeys(("train_images_per_s", "eval_images_per_s", "train_time_s", "train_time_s_std"))
    def speed(key: str) -> float:  # the mean over runs of each run's mean over epochs
        return statistics.fmean(statistics.fmean(h[key] for h in r["history"]) for r in runs)

    train_s = [sum(h["train_images"] / h["train_images_per_s"] for h in r["history"]) for r in runs]
    return {"train_images_per_s": speed("train_images_per_s"), "eval_images_per_s": speed("eval_images_per_s"),
            "train_time_s": statistics.fmean(train_s), "train_time_s_std": mean_std(train_s)[1]}


def role_of(record: dict[str, Any], first: bool) -> str:
    """``"static baseline"`` for a model without dynamic layers, ``"reference"`` for another first
    model (the deltas are against it), else ``""``."""
    if not first:
        return ""
    from ..models import create_model
    from ..tools.flops import dynamic_layers

    margs = record["model_args"]
    model = create_model(margs["name"], num_classes=margs["num_classes"], **margs["kwargs"])
    return "reference" if dynamic_layers(model) else "static baseline"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison table in markdown: the first row is the reference of the paired deltas."""
    name = _metric_name(rows[0].get("metric", "val_top1") if rows else "val_top1")
    short = name.replace(" (%)", "")
    header = ["model", "params", "FLOPs (MACs)", f"{name} mean ± std", f"Δ {short} vs first row, per seed", "seeds",
              "train time (s)", "train img/s", "eval img/s"]
    body = [[f"{r['model']} ({r['role']})" if r.get("role") else r["model"], format_count(r["params"]),
             f"{r['macs'] / 1e6:.2f}M", _metric_text(r), _deltas(r, i == 0), len(r["seeds"]),
             _number(r["train_time_s"]), _number(r["train_images_per_s"]), _number(r["eval_images_per_s"])]
            for i, r in enumerate(rows)]
    others = list(dict.fromkeys(k for r in rows for k in r.get("metrics") or {}))
    for line, r in zip(body, rows):  # the task's other metrics, after the main one's columns
        line[5:5] = [_mean_std_text(r.get("metrics", {}).get(k)) for k in others]
    header[5:5] = [f"{k} mean ± std" for k in others]
    devices = [r.get("devices") or [] for r in rows]
    if len({part for ds in devices for d in ds for part in d.split("+")}) > 1:  # say where, and what is timed
        timed = rows[0]["timed_on"]
        t = header.index("train time (s)")
        header[t:t + 3] = [f"{h} ({timed} runs)" if "+" not in timed else f"{h} (untimed)" for h in header[t:t + 3]]
        header.append("trained on, per seed")
        for line, ds in zip(body, devices):
            line.append(", ".join(ds))
    return markdown_table(header, body)


def metric_label(metric: str, value: float) -> str:
    """``top-1 81.15%`` for classification's ``val_top1``, ``mIoU 10.93`` for another metric.

    >>> metric_label("val_top1", 81.15), metric_label("mIoU", 10.93)
    ('top-1 81.15%', 'mIoU 10.93')
    """
    return f"top-1 {value:.2f}%" if metric == "val_top1" else f"{metric} {value:.2f}"


def _mean_std_text(summary: Optional[dict[str, Any]]) -> str:
    if not summary:
        return "—"
    return f"{summary['mean']:.2f}" + ("" if summary["std"] is None else f" ± {summary['std']:.2f}")


def _metric_name(metric: str) -> str:
    """How a table names a metric: ``top-1 (%)`` for classification's ``val_top1``, else its key."""
    return "top-1 (%)" if metric == "val_top1" else metric


def _number(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.0f}"


def _deltas(row: dict[str, Any], reference: bool) -> str:
    deltas = row.get("delta_vs_reference") or []
    if reference or not deltas:
        return "—"
    return f"{statistics.fmean(deltas):+.2f} (" + ", ".join(f"{d:+.2f}" for d in deltas) + ")"


def _metric_text(row: dict[str, Any]) -> str:
    """``mean ± std`` of the row's metric, or the mean alone for one seed (its spread is unknown, not zero)."""
    return _mean_std_text({"mean": row["metric_mean"], "std": row.get("metric_std")})


def plot(rows: list[dict[str, Any]], path: Path) -> Optional[Path]:
    """The task's metric (mean, seed std as error bars) against parameters and against training
    time, one point per model, the static baseline as a dashed line; None without matplotlib."""
    plt = pyplot()
    if plt is None:  # plotting is optional
        return None
    name = _metric_name(rows[0].get("metric", "val_top1") if rows else "val_top1")
    short_name = name.replace(" (%)", "")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    markers = "osD^v<>pPX*h"
    for ax, key, xlabel in ((axes[0], "params", "parameters"), (axes[1], "train_time_s", "training time (s)")):
        for i, r in enumerate(rows):
            if r[key] is None:  # not timed: no run on the first row's devices
                continue
            short = r["model"].replace("_cifar_resnet20", "").replace("cifar_resnet20", "static")
            ax.errorbar(r[key], r["metric_mean"], yerr=r.get("metric_std") or 0.0, fmt=markers[i % len(markers)],
                        capsize=4, label=short + (f" ({r['role']})" if r.get("role") else ""))
            ax.annotate(short, (r[key], r["metric_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if rows and rows[0].get("role") == "static baseline":
            ax.axhline(rows[0]["metric_mean"], color="gray", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel + " (log scale)")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[0].set_title(f"{short_name} vs parameters")
    axes[1].set_title(f"{short_name} vs training time (this machine, {rows[0].get('timed_on', '?')} runs)" if rows
                      else f"{short_name} vs training time")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_training_curves(records: list[dict[str, Any]], path: Path, metric: str = "val_top1") -> Optional[Path]:
    """Training loss and the task's ``metric`` (val top-1) against epoch, one line per model (the mean over its seeds,
    the seeds' range shaded): whether a model fits worse or generalises worse shows here. None
    without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4))
    for label in dict.fromkeys(r["model"] for r in records):
        histories = [r["history"] for r in records if r["model"] == label]
        epochs = [h["epoch"] for h in histories[0]]
        n = min(len(h) for h in histories)
        for ax, key in ((a1, "train_loss"), (a2, metric)):
            per_epoch = [[h[i][key] for h in histories] for i in range(n)]
            line, = ax.plot(epochs[:n], [statistics.fmean(v) for v in per_epoch], marker="o", ms=3,
                            label=label.replace("_cifar_resnet20", "") or label)
            if len(histories) > 1:
                ax.fill_between(epochs[:n], [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                                color=line.get_color(), alpha=0.15)
    a1.set_ylabel("training loss (task, no info-max)")
    a1.set_yscale("log")
    a2.set_ylabel(_metric_name(metric))
    for ax in (a1, a2):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    a2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def report_meta(plan: Plan, records: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """``compare.json``'s ``meta``: the recipe, the seeds tabulated, the runs' own training time
    (they may have been trained by earlier invocations), date and machine, plus ``extra``."""
    return {"task": plan.task, "preset": plan.preset, "recipe": plan.recipe, "width": plan.width,
            "seeds": sorted({r["seed"] for r in records}), "extra_train_options": plan.extra,
            "runs_time_s": sum(h.get("epoch_time_s", 0.0) for r in records for h in r["history"]),
            "date": time.strftime("%Y-%m-%d"), "machine": machine_description(), **extra}


def write_reports(rows: list[dict[str, Any]], records: list[dict[str, Any]], meta: dict[str, Any], out: Path,
                   start: float) -> None:
    table = markdown(rows)
    md, js, png_path, curves_path = (out / name for name in REPORTS)
    atomic_write_text(md, table)
    atomic_write_text(js, json.dumps({"meta": meta, "rows": rows}, indent=1))
    png = plot(rows, png_path)
    plot_training_curves(records, curves_path, rows[0].get("metric", "val_top1") if rows else "val_top1")
    print()
    print(table)
    print(f"wrote {md}, {js}" + (f", {png}" if png else "")
          + f"  ({time.time() - start:.0f} s)")
