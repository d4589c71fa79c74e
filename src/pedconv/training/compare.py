"""``pedconv compare``: train several models with one recipe over several seeds, and tabulate.

The default is the project's main job: static, PEDConv, CondConv, DY-Conv, ODConv and DCD
versions of a CIFAR-style ResNet-20 on real Fashion-MNIST (offline); it takes about 14 minutes on the
2-core CPU this project is built on (README). ``--quick`` is a smoke version (< 2 minutes); ``--preset study`` is the
converged comparison and ``--preset ablations`` the paper's ablations at this scale (each
about an hour on a 2-core CPU; both resumable).

Models are given as specs ``NAME[:key=value[:key=value...]]``; the key/values (YAML values)
go to the model builder, e.g. ``pedconv_cifar_resnet20:rank=4`` or
``pedconv_cifar_resnet20:components=[gamma]``. Options after ``--`` are passed to every
``pedconv train`` run (e.g. ``-- --amp --weight-decay 1e-4``).

Every run lives in ``<output>/runs/<spec>/seed<k>/`` (a normal ``pedconv train`` folder) and
is finished when its ``result.json`` exists. Re-running the same command skips finished runs
and resumes interrupted ones from their last checkpoint, so a long study can be stopped and
continued at any time. The table (params, FLOPs from :func:`pedconv.profile_model`, top-1
mean ± std over seeds, train and eval images/s) is written as ``compare.md``,
``compare.json`` and ``compare.png``. ``--report-only`` rewrites them from the finished runs
alone (a study trained in slices, some of its runs still to come), training nothing.

While it runs, a bar across all runs (a terminal) or one line per trained epoch (a log)
shows the run, its epoch and the time left. One comparison writes a folder at a time (a
second one on the same ``--output`` is refused, naming the first). Ctrl-C or SIGTERM stops
it with one line that names the interrupted run and the command that continues it
(exit status 130 / 143).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shlex
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

import yaml

from ..errors import CompareError, RunInterrupted, TrainOptionsError, UsageError
from ..tools.flops import format_count, profile_model
from ..utils.atomic import atomic_write_text, remove_leftover_temps
from ..utils.kv import KeyValueError, parse_key_values
from ..utils.lock import FolderLock
from ..utils.options import check_output_folder, non_negative_int, positive, positive_int
from ..utils.reporting import machine_description, markdown_table, pyplot, save_figure
from .data import DATASETS
from .run_folder import run_devices

__all__ = ["PRESETS", "CompareProgress", "ModelSpec", "build_parser", "main", "markdown", "parse_spec", "plot", "run",
           "run_compare", "summarize", "validate_args"]

_SMALL = ["cifar_resnet20", "pedconv_cifar_resnet20", "condconv_cifar_resnet20", "dyconv_cifar_resnet20"]
# The main job: the static baseline, PEDConv, and the systems of the paper's Table 1 that run at
# this scale, ODConv with one kernel (PEDConv's parameter count) and DCD among them.
_MAIN = [*_SMALL, "odconv_cifar_resnet20", "dcd_cifar_resnet20"]
# Every Table 1 system with a CIFAR-style ResNet-20 (SK: timm's SelectiveKernel in each block).
_SYSTEMS = [*_MAIN, "weightnet_cifar_resnet20", "kw_cifar_resnet20", "sk_cifar_resnet20"]

# Recipes. ``train`` holds `pedconv train` options shared by every run of the preset. Widths
# and budgets are sized from `experiments/train_throughput.py` on the 2-core CPU this project
# is built on (width-8 ResNet-20 train steps: ~1500 (static) / ~700 (PEDConv) / ~1100
# (CondConv) / ~950 (DY-Conv) images/s there).
_RECIPE = {"batch_size": 128, "lr": 0.2, "weight_decay": 5e-4, "val_subset": None}
_ABLATIONS = [
    "pedconv_cifar_resnet20:components=[gamma]",
    "pedconv_cifar_resnet20:components=[phi]",
    "pedconv_cifar_resnet20:components=[psi]",
    "pedconv_cifar_resnet20:rank=4",
    "pedconv_cifar_resnet20:variational=false",
    "pedconv_cifar_resnet20:infomax=false",
]
_FULL = ["cifar_resnet20", "pedconv_cifar_resnet20", "pedconv_cifar_resnet20:variational=false",
         "pedconv_cifar_resnet20:sigma=learned", "pedconv_cifar_resnet20:init=authors", "condconv_cifar_resnet20",
         "dyconv_cifar_resnet20", "odconv_cifar_resnet20", "dcd_cifar_resnet20"]
PRESETS: dict[str, dict[str, Any]] = {
    # The main job, sized to the 10-15 min goal on 2 cores (measured in the README): 4 epochs on
    # 10k images took 25 min for these six models; 3 epochs on 6k images take 13.6 min.
    "default": {"models": _MAIN, "seeds": [0, 1], "width": 8,
                "train": {**_RECIPE, "epochs": 3, "train_subset": 6000, "warmup_epochs": 0.5}},
    # Every Table 1 system, with the study's recipe (~1.5 h here).
    "systems": {"models": _SYSTEMS, "seeds": [0, 1, 2], "width": 8,
                "train": {**_RECIPE, "epochs": 12, "train_subset": 10000, "warmup_epochs": 1.0}},
    # CI smoke: well under 2 minutes.
    "quick": {"models": _SMALL, "seeds": [0], "width": 8,
              "train": {**_RECIPE, "epochs": 2, "train_subset": 2048, "val_subset": 2000, "warmup_epochs": 0.0}},
    # The converged comparison: 3 seeds, 12 epochs on 10k images (about 30 min per seed here).
    "study": {"models": _SMALL, "seeds": [0, 1, 2], "width": 8,
              "train": {**_RECIPE, "epochs": 12, "train_subset": 10000, "warmup_epochs": 1.0}},
    # The converged full-data study (README, "The full-data study"; ~30 runs of 25-40 min on one
    # CPU thread each, so run in slices: experiments/compare_slices.py, full_study_slices.txt):
    # all 60k training images, width 8, every system and PEDConv's generator variants.
    "full": {"models": _FULL, "seeds": [0, 1, 2], "width": 8,
             "train": {**_RECIPE, "epochs": 10, "train_subset": None, "warmup_epochs": 1.0}},
    # Its sigma / info-max sweep, seed 0 (sigma 0 = variational=false, 0.1 = the default; lambda 0 =
    # infomax=false, 1e-3 = the default; lambda 1e-2 is `--preset full --models pedconv_cifar_resnet20
    # --output <another folder> -- --infomax-weight 0.01`: static does not depend on lambda).
    "full-sweep": {"models": ["cifar_resnet20", "pedconv_cifar_resnet20", "pedconv_cifar_resnet20:variational=false",
                              "pedconv_cifar_resnet20:sigma=0.05", "pedconv_cifar_resnet20:sigma=0.2",
                              "pedconv_cifar_resnet20:infomax=false"], "seeds": [0], "width": 8,
                   "train": {**_RECIPE, "epochs": 10, "train_subset": None, "warmup_epochs": 1.0}},
    # Fine-tuning from pretrained static networks (README, "Fine-tuning"): first the static
    # width-16 ResNet-20s, trained until top-1 is flat (20 epochs on the main job's 12k images)...
    "finetune-base": {"models": ["cifar_resnet20"], "seeds": [0, 1, 2], "width": 16,
                      "train": {**_RECIPE, "epochs": 20, "train_subset": 12000, "warmup_epochs": 1.0}},
    # ...then, from each seed's network, N = 5 more epochs at a tenth of the lr with the same data
    # order: kept static (the reference) or converted with its function kept. CondConv is not in
    # it: its from_conv cannot keep a conv's function (sigmoid routing).
    "finetune": {"models": ["cifar_resnet20", "pedconv_cifar_resnet20", "odconv_cifar_resnet20",
                            "dyconv_cifar_resnet20"], "seeds": [0, 1, 2], "width": 16,
                 "init_from": "runs/compare-finetune-base",
                 "train": {**_RECIPE, "lr": 0.02, "epochs": 5, "train_subset": 12000, "warmup_epochs": 0.0}},
    # The paper's ablations (Table 5a/5b, Sec. 4.5 info-max) with the study's recipe; their
    # reference rows (static, default PEDConv) are the study's runs with the same seeds.
    "ablations": {"models": _ABLATIONS, "seeds": [0, 1, 2], "width": 8,
                  "train": {**_RECIPE, "epochs": 12, "train_subset": 10000, "warmup_epochs": 1.0}},
    # The transfer study's first half (the paper's protocol at this machine's scale): ImageNet-style
    # ResNet-18 backbones, static and PEDConv, pretrained as classifiers on all of Fashion-MNIST
    # (the grey images replicated to 3 channels), for experiments/task_compare.py --init-from to
    # fine-tune the SSD300 and UperNet ResNet-18s from. 48 px is the scale at which the scenes show
    # an item (16-64 px tall on the 128 px detection canvas, 12-48 px on the 96 px segmentation
    # one), so the backbone meets its objects at the size it learnt them; one pass over the 60k
    # images keeps the six runs at about 45 min on this 2-core CPU (96 px and 3 epochs: ~9 h).
    "transfer-pretrain": {"models": ["resnet18", "pedconv_resnet18"], "seeds": [0, 1, 2], "width": None,
                          "train": {**_RECIPE, "epochs": 1, "train_subset": None, "img_size": 48,
                                    "warmup_epochs": 0.2, "checkpoint_every_steps": 50}},
}

# What a comparison writes in its output folder.
_REPORTS = ("compare.md", "compare.json", "compare.png", "curves.png")
# A run's epoch records, rewritten by `pedconv train` after every epoch.
_METRICS = "metrics.jsonl"
# The image size of the in-memory datasets when a run has no --img-size.
_IMAGE_SIZE = {"fashion_mnist": 28, "cifar10": 32, "cifar100": 32}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name plus builder keyword arguments, with a label for tables/folders."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``NAME:key=value...`` as in tables (the spec, values compacted)."""
        if not self.kwargs:
            return self.name
        return self.name + "".join(f":{k}={_compact(v)}" for k, v in self.kwargs.items())

    @property
    def folder(self) -> str:
        """The label made safe as a folder name."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label.replace(":", "__"))


def _compact(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_compact(x) for x in v) + "]"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def parse_spec(text: str) -> ModelSpec:
    """``"NAME[:key=value...]"`` -> :class:`ModelSpec` (values parsed as YAML).

    Raises:
        UsageError: an item that is not ``key=value``, or an unknown model name (with suggestions).

    >>> parse_spec("pedconv_cifar_resnet20:rank=4:components=[gamma, psi]").kwargs
    {'rank': 4, 'components': ['gamma', 'psi']}
    """
    name, *items = text.split(":")
    try:
        kwargs = parse_key_values(items)
    except KeyValueError as e:
        raise UsageError(f"model spec {text!r}: {e}") from None
    from ..models import model_entrypoint

    try:
        model_entrypoint(name.strip())  # unknown names fail here, with suggestions
    except ValueError as e:
        raise UsageError(str(e)) from None
    return ModelSpec(name.strip(), kwargs)


def _mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """Mean and sample std; the std of one value is None (unknown, not 0)."""
    if not values:
        return math.nan, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _recipe(args: argparse.Namespace, preset: dict[str, Any]) -> dict[str, Any]:
    """The `pedconv train` options every run of this comparison shares."""
    recipe = {"data": args.data, "data_dir": args.data_dir, **preset["train"]}
    for key in ("epochs", "train_subset", "val_subset", "batch_size", "lr"):
        value = getattr(args, key)
        if value is not None:
            recipe[key] = value
    return recipe


def _train_options(spec: ModelSpec, extra: list[str]) -> dict[str, Any]:
    """The options that ``extra`` (the `pedconv train` flags after ``--``) set for this model."""
    if not extra:
        return {}
    from ..cli import parse_args

    # Not validated here: validate_args checks each run's options as a whole.
    plain, with_extra = (vars(parse_args(["train", "--model", spec.name, *more], validate=False))
                         for more in ([], extra))
    return {k: v for k, v in with_extra.items() if plain.get(k) != v and k != "command"}


def _saved_input_size(folder: Path, record: dict[str, Any], data: str) -> list[int]:
    """``[C, H, W]`` of a run whose ``result.json`` predates ``input_size``: from its ``args.yaml``."""
    args_yaml = folder / "args.yaml"
    saved = yaml.safe_load(args_yaml.read_text()) if args_yaml.is_file() else {}
    size = (saved or {}).get("img_size") or _IMAGE_SIZE.get(data, 224)
    return [record["model_args"]["input_chans"], size, size]


def _run_config(spec: ModelSpec, seed: int, width: Optional[int], recipe: dict[str, Any], extra: list[str],
                folder: Path, quiet: bool, init_from: Optional[Path] = None) -> dict[str, Any]:
    """The `pedconv train` options of one (model, seed) run."""
    kwargs = dict(spec.kwargs)
    if width is not None:
        kwargs.setdefault("width", width)
    start = {"init_from": str(init_source(init_from, seed))} if init_from is not None else {}
    # Precedence: train defaults < the recipe < options after `--` < this run's identity.
    return {**recipe, **_train_options(spec, extra), "model": spec.name, "model_kwargs": kwargs, "seed": seed,
            "output": str(folder), "resume": "auto", "quiet": quiet, **start}


def init_source(comparison: Path, seed: int) -> Path:
    """Seed ``seed``'s run folder in ``comparison`` (a `pedconv compare` folder holding one model,
    or one model's folder of ``seed<k>`` runs): where a fine-tuning run of that seed starts.

    Raises:
        UsageError: ``comparison`` holds no finished run of that seed, or several models.
    """
    direct = comparison / f"seed{seed}"
    found = [direct] if direct.is_dir() else sorted(comparison.glob(f"runs/*/seed{seed}"))
    if len(found) > 1:
        raise UsageError(f"--init-from {comparison}: several models have a seed {seed} run "
                         f"({', '.join(p.parent.name for p in found)}); name one model's folder")
    if not found or not (found[0] / "result.json").is_file():
        raise UsageError(f"--init-from {comparison}: no finished seed {seed} run there (run that comparison first)")
    return found[0]


def _run_one(spec: ModelSpec, seed: int, width: Optional[int], recipe: dict[str, Any], extra: list[str],
             folder: Path, quiet: bool, init_from: Optional[Path] = None) -> dict[str, Any]:
    """Train one (model, seed) unless already finished; returns its result record."""
    from .train import train

    done = folder / "result.json"
    remove_leftover_temps(folder, [done.name])  # of a write that was interrupted (train cleans up its own)
    identity = _identity(spec, seed, width, recipe, extra, init_from)
    record = _finished_record(folder, identity, recipe)
    if record is not None:
        return record
    result = train(_run_config(spec, seed, width, recipe, extra, folder, quiet, init_from))
    record = {
        **(result.get("result") or {}),
        "identity": identity,
        "model": spec.label,
        "seed": seed,
        "final": result["final"],
        "best_top1": result["best_top1"],
        "history": result["history"],
        "model_args": result["model_args"],
        "input_size": result["input_size"],
        "devices": run_devices(folder),
    }
    atomic_write_text(done, json.dumps(record, indent=1, default=str))
    return record


def _identity(spec: ModelSpec, seed: int, width: Optional[int], recipe: dict[str, Any], extra: list[str],
              init_from: Optional[Path]) -> dict[str, Any]:
    """What makes a run the one a comparison asks for (saved in its ``result.json``)."""
    identity = {"model": spec.label, "seed": seed, "width": width, "recipe": recipe, "extra": extra}
    if init_from is not None:
        identity["init_from"] = str(init_from)
    return identity


def _finished_record(folder: Path, identity: dict[str, Any], recipe: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The record of the finished run in ``folder``, None while it is not finished.

    Raises:
        CompareError: the run there was trained with another recipe.
    """
    done = folder / "result.json"
    try:
        record = json.loads(done.read_text()) if done.is_file() else {}
    except json.JSONDecodeError as e:
        raise CompareError(f"{done}: not valid JSON ({e.msg}); delete it to retrain that run") from None
    # `pedconv train` ends by writing its own result.json (no "identity"): then the run is
    # trained but not yet recorded here, and resuming it just returns its history.
    if "identity" not in record:
        return None
    if record.get("identity") != identity:
        raise CompareError(f"{folder} holds a finished run with a different recipe ({record.get('identity')}); "
                           "use another --output or delete that folder")
    record.setdefault("input_size", _saved_input_size(folder, record, recipe["data"]))
    record.setdefault("devices", run_devices(folder))  # recorded before "devices" existed
    return record


def _profile(record: dict[str, Any]) -> tuple[int, int]:
    """Parameters and MACs of a run's model at the input size the run used."""
    from ..models import create_model

    margs = record["model_args"]
    model = create_model(margs["name"], num_classes=margs["num_classes"], **margs["kwargs"])
    prof = profile_model(model, (1, *record["input_size"]))
    return prof.params, prof.macs


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: params, MACs (at the runs' input size), top-1 mean/std over seeds, images
    per second, training time, and top-1 minus the first model's (the reference) paired by seed."""
    rows = []
    labels = list(dict.fromkeys(r["model"] for r in records))
    reference = {r["seed"]: r["final"]["val_top1"] for r in records if r["model"] == labels[0]}
    # Speeds and times are compared only between runs trained on the one device type of the
    # first run (a study trained in slices may have put some runs on a GPU, or moved one there).
    timed_on = _devices(next(r for r in records if r["model"] == labels[0]))
    for label in labels:
        runs = [r for r in records if r["model"] == label]
        top1 = [r["final"]["val_top1"] for r in runs]
        deltas = [r["final"]["val_top1"] - reference[r["seed"]] for r in runs if r["seed"] in reference]
        params, macs = _profile(runs[0])
        m, s = _mean_std(top1)
        rows.append({"model": label, "role": _role(runs[0], label == labels[0]), "params": params, "macs": macs,
                     "top1_mean": m, "top1_std": s, "top1_runs": top1, "seeds": [r["seed"] for r in runs],
                     "delta_vs_reference": deltas, "devices": [_devices(r) for r in runs], "timed_on": timed_on,
                     **_timings([r for r in runs if _devices(r) == timed_on and "+" not in timed_on])})
    return rows


def _devices(record: dict[str, Any]) -> str:
    """Where a run trained: ``cpu``, ``cuda``, ``cuda+cpu`` (moved while resumed), ``?`` if unknown."""
    return "+".join(record.get("devices") or ["?"])


def _timings(runs: list[dict[str, Any]]) -> dict[str, Optional[float]]:
    """Mean images/s and training time of ``runs``; None each without a run."""
    if not runs:
        return dict.fromkeys(("train_images_per_s", "eval_images_per_s", "train_time_s", "train_time_s_std"))
    def speed(key: str) -> float:  # the mean over runs of each run's mean over epochs
        return statistics.fmean(statistics.fmean(h[key] for h in r["history"]) for r in runs)

    train_s = [sum(h["train_images"] / h["train_images_per_s"] for h in r["history"]) for r in runs]
    return {"train_images_per_s": speed("train_images_per_s"), "eval_images_per_s": speed("eval_images_per_s"),
            "train_time_s": statistics.fmean(train_s), "train_time_s_std": _mean_std(train_s)[1]}


def _role(record: dict[str, Any], first: bool) -> str:
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
    header = ["model", "params", "FLOPs (MACs)", "top-1 (%) mean ± std", "Δ top-1 vs first row, per seed", "seeds",
              "train time (s)", "train img/s", "eval img/s"]
    body = [[f"{r['model']} ({r['role']})" if r.get("role") else r["model"], format_count(r["params"]),
             f"{r['macs'] / 1e6:.2f}M", _top1(r), _deltas(r, i == 0), len(r["seeds"]), _number(r["train_time_s"]),
             _number(r["train_images_per_s"]), _number(r["eval_images_per_s"])] for i, r in enumerate(rows)]
    devices = [r.get("devices") or [] for r in rows]
    if len({part for ds in devices for d in ds for part in d.split("+")}) > 1:  # say where, and what is timed
        timed = rows[0]["timed_on"]
        header[6:9] = [f"{h} ({timed} runs)" if "+" not in timed else f"{h} (untimed)" for h in header[6:9]]
        header.append("trained on, per seed")
        for line, ds in zip(body, devices):
            line.append(", ".join(ds))
    return markdown_table(header, body)


def _number(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.0f}"


def _deltas(row: dict[str, Any], reference: bool) -> str:
    deltas = row.get("delta_vs_reference") or []
    if reference or not deltas:
        return "—"
    return f"{statistics.fmean(deltas):+.2f} (" + ", ".join(f"{d:+.2f}" for d in deltas) + ")"


def _top1(row: dict[str, Any]) -> str:
    """``mean ± std``, or the mean alone for one seed (its spread is unknown, not zero)."""
    mean, std = row["top1_mean"], row.get("top1_std")
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def plot(rows: list[dict[str, Any]], path: Path) -> Optional[Path]:
    """Top-1 (mean, seed std as error bars) against parameters and against training time, one
    point per model, the static baseline as a dashed line; None without matplotlib."""
    plt = pyplot()
    if plt is None:  # plotting is optional
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    markers = "osD^v<>pPX*h"
    for ax, key, xlabel in ((axes[0], "params", "parameters"), (axes[1], "train_time_s", "training time (s)")):
        for i, r in enumerate(rows):
            if r[key] is None:  # not timed: no run on the first row's devices
                continue
            short = r["model"].replace("_cifar_resnet20", "").replace("cifar_resnet20", "static")
            ax.errorbar(r[key], r["top1_mean"], yerr=r.get("top1_std") or 0.0, fmt=markers[i % len(markers)],
                        capsize=4, label=short + (f" ({r['role']})" if r.get("role") else ""))
            ax.annotate(short, (r[key], r["top1_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if rows and rows[0].get("role") == "static baseline":
            ax.axhline(rows[0]["top1_mean"], color="gray", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel + " (log scale)")
        ax.set_ylabel("val top-1 (%)")
        ax.grid(True, alpha=0.3)
    axes[0].set_title("accuracy vs parameters")
    axes[1].set_title(f"accuracy vs training time (this machine, {rows[0].get('timed_on', '?')} runs)" if rows
                      else "accuracy vs training time")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_training_curves(records: list[dict[str, Any]], path: Path) -> Optional[Path]:
    """Training loss and val top-1 against epoch, one line per model (the mean over its seeds,
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
        for ax, key in ((a1, "train_loss"), (a2, "val_top1")):
            per_epoch = [[h[i][key] for h in histories] for i in range(n)]
            line, = ax.plot(epochs[:n], [statistics.fmean(v) for v in per_epoch], marker="o", ms=3,
                            label=label.replace("_cifar_resnet20", "") or label)
            if len(histories) > 1:
                ax.fill_between(epochs[:n], [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                                color=line.get_color(), alpha=0.15)
    a1.set_ylabel("training loss (task, no info-max)")
    a1.set_yscale("log")
    a2.set_ylabel("val top-1 (%)")
    for ax in (a1, a2):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    a2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv compare`` options, added to ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--quick", "--", "--amp"]).train_options
    ['--', '--amp']
    """
    p = parser or argparse.ArgumentParser(prog="pedconv compare", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="default: the main job (~14 min, 2 cores); quick: smoke (<2 min); study, ablations: "
                        "~1 h each; full, full-sweep: the converged full-data study (hours, in parts); "
                        "finetune-base then finetune: fine-tuning pretrained static networks")
    p.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    p.add_argument("--models", nargs="+", default=None, metavar="SPEC", help="NAME[:key=value...] (default: preset's)")
    p.add_argument("--seeds", nargs="+", type=non_negative_int, default=None, help="default: preset's")
    p.add_argument("--width", type=positive_int, default=None,
                   help="base width passed to every model (default: preset's)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: preset's")
    p.add_argument("--train-subset", type=positive_int, default=None, help="default: preset's")
    p.add_argument("--val-subset", type=positive_int, default=None, help="default: preset's")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: preset's")
    p.add_argument("--lr", type=positive, default=None, help="lr per 256 images (default: preset's)")
    p.add_argument("--init-from", type=Path, default=None, metavar="COMPARISON",
                   help="start every run of seed k from seed k's trained run in this comparison folder (which "
                        "holds one model): fine-tuning (default: the preset's; finetune: runs/compare-finetune-base)")
    p.add_argument("--data", choices=DATASETS, default="fashion_mnist", help="dataset (fashion_mnist: offline)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", type=Path, default=None,
                   help="default: runs/compare-<preset> (the published tables: results/compare-<preset>)")
    p.add_argument("--verbose", action="store_true", help="show each run's progress")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite the reports from the finished runs in --output of these models "
                        "(and --seeds; default: every seed there), naming the runs left out")
    p.add_argument("train_options", nargs=argparse.REMAINDER,
                   help="after `--`: more `pedconv train` options for every run")
    return p


@dataclass
class _Plan:
    """What a comparison does, from its options: the runs, their shared recipe, the folder."""

    preset: str
    specs: list[ModelSpec]
    seeds: list[int]
    width: Optional[int]
    recipe: dict[str, Any]
    extra: list[str]
    out: Path
    init_from: Optional[Path] = None

    @property
    def runs(self) -> list[tuple[ModelSpec, int, Path]]:
        """``(spec, seed, run folder)`` in the order they run: every model of seed 0, then seed 1..."""
        return [(spec, seed, self.out / "runs" / spec.folder / f"seed{seed}") for seed in self.seeds
                for spec in self.specs]


def _plan(args: argparse.Namespace) -> _Plan:
    preset = PRESETS[args.preset]
    specs = [parse_spec(s) for s in (args.models or preset["models"])]
    if len({s.label for s in specs}) != len(specs):
        raise UsageError("--models lists the same model spec twice")
    return _Plan(args.preset, specs, args.seeds if args.seeds is not None else preset["seeds"],
                 args.width if args.width is not None else preset["width"], _recipe(args, preset),
                 [a for a in (args.train_options or []) if a != "--"],
                 args.output or Path("runs") / f"compare-{args.preset}",
                 args.init_from or (Path(preset["init_from"]) if "init_from" in preset else None))


def validate_args(args: argparse.Namespace) -> None:
    """Refuse, before any run starts, a comparison that cannot work: bad or repeated model specs
    and `pedconv train` options that fail for its runs (:class:`~pedconv.errors.UsageError`), or a
    device or output folder this machine does not have (:class:`~pedconv.errors.RunError`).

    >>> validate_args(build_parser().parse_args(["--batch-size", "512", "--train-subset", "100"]))
    Traceback (most recent call last):
    ...
    pedconv.errors.UsageError: --train-subset 100 is smaller than one optimizer step of 512 images ...
    """
    from .train import resolve_config

    plan = _plan(args)
    check_output_folder(plan.out)
    spec, seed, folder = plan.runs[0]
    try:  # every run shares the recipe: the first one's options stand for all
        resolve_config(_run_config(spec, seed, plan.width, plan.recipe, plan.extra, folder, quiet=True))
    except TrainOptionsError as e:
        raise UsageError(str(e)) from None


def run_compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run (or continue) the comparison described by parsed ``args``; returns the table rows.

    Raises:
        UsageError: bad or repeated model specs; CompareError: the output folder holds runs of
        another recipe; FolderBusyError: another comparison is writing the output folder;
        RunInterrupted: Ctrl-C or SIGTERM (its message says how to continue); and what
        :func:`pedconv.training.train.train` raises.
    """
    plan = _plan(args)
    if getattr(args, "report_only", False):
        return _report_only(plan, explicit_seeds=args.seeds is not None)
    with FolderLock(plan.out, "pedconv compare"), _sigterm_raises():
        remove_leftover_temps(plan.out, _REPORTS)
        _print_budget(plan)
        progress = CompareProgress([(f"{spec.label} seed {seed}", folder) for spec, seed, folder in plan.runs],
                                   plan.recipe["epochs"])
        start = time.time()
        try:
            records = _run_all(plan, progress, quiet=not args.verbose)
            progress.close()
            rows = summarize(records)
            _write_reports(rows, records, _meta(plan, records, invocation_time_s=time.time() - start), plan.out,
                           start)
        except (KeyboardInterrupt, RunInterrupted) as e:
            signum = e.signal_number if isinstance(e, RunInterrupted) else int(signal.SIGINT)
            raise RunInterrupted(f"interrupted by {signal.Signals(signum).name} {progress.where()}; finished runs "
                                 "are kept and an interrupted run continues from its last checkpoint. Resume with: "
                                 f"{_resume_command(args, plan.out)}", signum) from None
        finally:
            progress.close()
    return rows


def _meta(plan: _Plan, records: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """``compare.json``'s ``meta``: the recipe, the seeds tabulated, the runs' own training time
    (they may have been trained by earlier invocations), date and machine, plus ``extra``."""
    return {"preset": plan.preset, "recipe": plan.recipe, "width": plan.width,
            "seeds": sorted({r["seed"] for r in records}), "extra_train_options": plan.extra,
            "runs_time_s": sum(h.get("epoch_time_s", 0.0) for r in records for h in r["history"]),
            "date": time.strftime("%Y-%m-%d"), "machine": machine_description(), **extra}


def _report_only(plan: _Plan, explicit_seeds: bool) -> list[dict[str, Any]]:
    """``--report-only``: the reports from the finished runs of ``plan``'s models (its seeds, or
    every ``seed<k>`` folder there), training nothing; returns the table rows.

    Raises:
        UsageError: no finished run of these models there; CompareError: one of another recipe.
    """
    with FolderLock(plan.out, "pedconv compare"):
        start = time.time()
        records, left_out = [], []
        for spec in plan.specs:
            model_dir = plan.out / "runs" / spec.folder
            seeds = plan.seeds if explicit_seeds else sorted(
                int(m.group(1)) for d in model_dir.glob("seed*") if (m := re.fullmatch(r"seed(\d+)", d.name)))
            for seed in seeds:
                identity = _identity(spec, seed, plan.width, plan.recipe, plan.extra, plan.init_from)
                record = _finished_record(model_dir / f"seed{seed}", identity, plan.recipe)
                if record is None:
                    left_out.append(f"{spec.label} seed {seed}")
                else:
                    records.append(record)
        if not records:
            raise UsageError(f"--report-only: {plan.out} holds no finished run of "
                             f"{', '.join(s.label for s in plan.specs)} (train them first)")
        if left_out:
            print(f"left out, not finished: {', '.join(left_out)}", flush=True)
        rows = summarize(records)
        _write_reports(rows, records, _meta(plan, records, report_only=True, left_out=left_out), plan.out, start)
    return rows


def _print_budget(plan: _Plan) -> None:
    recipe = plan.recipe
    images = recipe["epochs"] * (recipe.get("train_subset") or 60000)
    print(f"pedconv compare [{plan.preset}]: {len(plan.specs)} models x {len(plan.seeds)} seeds = {len(plan.runs)} "
          f"runs; each {recipe['epochs']} epochs on {recipe.get('train_subset') or 'all'} training images ({images} "
          f"images), width {plan.width}, batch {recipe['batch_size']}, lr {recipe['lr']} per 256; data "
          f"{recipe['data']}; output {plan.out}", flush=True)


def _run_all(plan: _Plan, progress: CompareProgress, quiet: bool) -> list[dict[str, Any]]:
    """Every run, in order (finished ones are read back); returns their records."""
    records = []
    for index, (spec, seed, folder) in enumerate(plan.runs):
        t0 = time.time()
        cached = (folder / "result.json").is_file()
        with contextlib.nullcontext() if cached else progress.watch(index):
            record = _run_one(spec, seed, plan.width, plan.recipe, plan.extra, folder, quiet, plan.init_from)
        records.append(record)
        progress.run_done(f"  {spec.label:<48} seed {seed}: top-1 {record['final']['val_top1']:.2f}%  "
                          + ("(finished earlier)" if cached else f"({time.time() - t0:.0f} s)"))
    return records


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM stops the comparison as Ctrl-C does (an exception in the main thread), so that it
    also ends with the line that says how to continue. (A `pedconv train` run in progress may
    handle the signal itself: it saves, then raises :class:`~pedconv.errors.RunInterrupted`.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise RunInterrupted("terminated", signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _resume_command(args: argparse.Namespace, out: Path) -> str:
    """The command line that continues this comparison: its options, with the folder made explicit."""
    words = ["pedconv", "compare"]
    if args.preset != "default":
        words += ["--preset", args.preset]
    if args.models:
        words += ["--models", *args.models]
    if args.seeds is not None:
        words += ["--seeds", *map(str, args.seeds)]
    for key in ("width", "epochs", "train_subset", "val_subset", "batch_size", "lr"):
        if getattr(args, key) is not None:
            words += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.data != "fashion_mnist":
        words += ["--data", args.data]
    if args.data_dir:
        words += ["--data-dir", str(args.data_dir)]
    words += ["--output", str(out)] + (["--verbose"] if args.verbose else [])
    extra = [a for a in (args.train_options or []) if a != "--"]
    return shlex.join(words + (["--", *extra] if extra else []))


def _records(path: Path) -> list[dict[str, Any]]:
    """The epoch records of a run's ``metrics.jsonl`` (written atomically by the run), [] if none."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError:
        return []


def _duration(seconds: float) -> str:
    """``45 s``, ``3 min 10 s``, ``1 h 05 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class CompareProgress:
    """What a comparison shows while it runs, across all its runs.

    On a terminal, one tqdm bar counts the epochs left to train (tqdm's ETA) and names the
    current run and its epoch; otherwise one plain line per trained epoch says the same,
    with the runs done and the time left. A run's progress is read from the ``metrics.jsonl``
    that `pedconv train` rewrites after every epoch, by a thread that looks every ``interval``
    seconds while the run trains (`pedconv train` runs in this process and has no hook).

    Args:
        runs: ``(label, run folder)`` of every run, in order.
        epochs: epochs per run.
        stream: the bar's stream (stderr); ``out``: where lines go (stdout).
        use_tqdm: None = a bar when ``stream`` is a terminal.

    >>> import io, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> p = CompareProgress([("cifar_resnet20 seed 0", folder)], epochs=2, out=sys.stdout, use_tqdm=False)
    >>> with p.watch(0):
    ...     _ = (folder / "metrics.jsonl").write_text('{"epoch": 1, "val_top1": 80.0}\\n')
    ... # doctest: +ELLIPSIS
    compare: run 1/1 cifar_resnet20 seed 0: epoch 1/2, val top-1 80.00%; 0/1 runs done, about ... left
    """

    def __init__(self, runs: Sequence[tuple[str, Path]], epochs: int, stream: Optional[TextIO] = None,
                 out: Optional[TextIO] = None, use_tqdm: Optional[bool] = None, interval: float = 1.0) -> None:
        self.runs, self.epochs, self.interval = list(runs), epochs, interval
        self.stream, self.out = stream or sys.stderr, out or sys.stdout
        self.todo = sum(0 if (folder / "result.json").is_file() else max(0, epochs - len(_records(folder / _METRICS)))
                        for _, folder in self.runs)  # epochs to train now
        self.trained, self.finished, self.current, self._seen = 0, 0, -1, 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.bar: Any = None
        if getattr(self.stream, "isatty", lambda: False)() if use_tqdm is None else use_tqdm:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.todo, unit="epoch", desc="compare", file=self.stream, dynamic_ncols=True)

    @contextlib.contextmanager
    def watch(self, index: int) -> Iterator[None]:
        """While run ``index`` trains: follow its epochs."""
        label, folder = self.runs[index]
        path = folder / _METRICS
        self.current, self._seen = index, len(_records(path))
        if self.bar is not None:
            self.bar.set_description_str(f"run {index + 1}/{len(self.runs)} {label}: epoch {self._seen}/{self.epochs}")
        stop = threading.Event()
        watcher = threading.Thread(target=self._follow, args=(path, stop), daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            self._poll(path)

    def _follow(self, path: Path, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self._poll(path)
            if self.bar is not None:
                self.bar.refresh()  # the elapsed time and the ETA keep moving

    def _poll(self, path: Path) -> None:
        with self._lock:
            records = _records(path)
            self._seen = min(self._seen, len(records))  # a fresh start replaced an older file
            for record in records[self._seen:]:
                self._epoch_done(record)
            self._seen = len(records)

    def _epoch_done(self, record: dict[str, Any]) -> None:
        self.trained += 1
        text = f"run {self.current + 1}/{len(self.runs)} {self.runs[self.current][0]}: epoch {record.get('epoch')}/" \
               f"{self.epochs}"
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=False)
            self.bar.update(1)
            return
        top1 = record.get("val_top1")
        print(f"compare: {text}" + (f", val top-1 {top1:.2f}%" if isinstance(top1, (int, float)) else "")
              + f"; {self.finished}/{len(self.runs)} runs done, {self.time_left()}", file=self.out, flush=True)

    def time_left(self) -> str:
        """The time left at the pace of the epochs trained so far."""
        if self.trained >= self.todo:
            return "all epochs trained"
        if not self.trained:
            return "time left unknown"
        per_epoch = (time.monotonic() - self.started) / self.trained
        return f"about {_duration(per_epoch * (self.todo - self.trained))} left"

    def where(self) -> str:
        """Where the comparison is, for a message: ``in run 3/8 (NAME seed 0)``."""
        if self.current >= 0 and self.finished <= self.current:
            return f"in run {self.current + 1}/{len(self.runs)} ({self.runs[self.current][0]})"
        return f"after {self.finished} of {len(self.runs)} runs"

    def run_done(self, message: str) -> None:
        """A run finished (or was found finished): count it and show ``message``."""
        self.finished += 1
        if self.bar is not None:
            self.bar.write(message, file=self.out)
        else:
            print(message, file=self.out, flush=True)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _write_reports(rows: list[dict[str, Any]], records: list[dict[str, Any]], meta: dict[str, Any], out: Path,
                   start: float) -> None:
    table = markdown(rows)
    md, js, png_path, curves_path = (out / name for name in _REPORTS)
    atomic_write_text(md, table)
    atomic_write_text(js, json.dumps({"meta": meta, "rows": rows}, indent=1))
    png = plot(rows, png_path)
    plot_training_curves(records, curves_path)
    print()
    print(table)
    print(f"wrote {md}, {js}" + (f", {png}" if png else "")
          + f"  ({time.time() - start:.0f} s)")


def run(args: argparse.Namespace) -> int:
    """``pedconv compare`` on parsed options; errors propagate to :func:`pedconv.cli.main`, which prints them."""
    run_compare(args)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pedconv compare`` entry point: exit status 0 ok, 1 error, 2 usage error, 130 / 143 interrupted by
    Ctrl-C / SIGTERM."""
    from ..cli import main as cli_main

    return cli_main(["compare", *(sys.argv[1:] if argv is None else argv)])
