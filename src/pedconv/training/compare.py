"""``pedconv compare``: train several models with one recipe over several seeds, and tabulate.

The default is the project's main job: static, PEDConv, CondConv and DY-Conv versions of a
CIFAR-style ResNet-20 on real Fashion-MNIST (offline), sized to finish in about 10-15 minutes
on a 2-core CPU. ``--quick`` is a smoke version (< 2 minutes); ``--preset study`` is the
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
``compare.json`` and ``compare.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import CompareError, UsageError
from ..utils.atomic import atomic_write_text, remove_leftover_temps
from ..utils.kv import KeyValueError, parse_key_values
from ..utils.reporting import machine_description, markdown_table, pyplot, save_figure

__all__ = ["PRESETS", "ModelSpec", "build_parser", "main", "markdown", "parse_spec", "plot", "run", "run_compare",
           "summarize"]

_SMALL = ["cifar_resnet20", "pedconv_cifar_resnet20", "condconv_cifar_resnet20", "dyconv_cifar_resnet20"]

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
PRESETS: dict[str, dict[str, Any]] = {
    # The main job: ~10-15 min on 2 cores (measured budget in the README).
    "default": {"models": _SMALL, "seeds": [0, 1], "width": 8,
                "train": {**_RECIPE, "epochs": 5, "train_subset": 12000, "warmup_epochs": 0.5}},
    # CI smoke: well under 2 minutes.
    "quick": {"models": _SMALL, "seeds": [0], "width": 8,
              "train": {**_RECIPE, "epochs": 2, "train_subset": 2048, "val_subset": 2000, "warmup_epochs": 0.0}},
    # The converged comparison: 3 seeds, 12 epochs on 10k images (about 30 min per seed here).
    "study": {"models": _SMALL, "seeds": [0, 1, 2], "width": 8,
              "train": {**_RECIPE, "epochs": 12, "train_subset": 10000, "warmup_epochs": 1.0}},
    # The paper's ablations (Table 5a/5b, Sec. 4.5 info-max) with the study's recipe; their
    # reference rows (static, default PEDConv) are the study's runs with the same seeds.
    "ablations": {"models": _ABLATIONS, "seeds": [0, 1, 2], "width": 8,
                  "train": {**_RECIPE, "epochs": 12, "train_subset": 10000, "warmup_epochs": 1.0}},
}

# What a comparison writes in its output folder.
_REPORTS = ("compare.md", "compare.json", "compare.png")
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


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


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
    from .train import parse_args

    plain, with_extra = vars(parse_args(["--model", spec.name])), vars(parse_args(["--model", spec.name, *extra]))
    return {k: v for k, v in with_extra.items() if plain.get(k) != v and k != "command"}


def _saved_input_size(folder: Path, record: dict[str, Any], data: str) -> list[int]:
    """``[C, H, W]`` of a run whose ``result.json`` predates ``input_size``: from its ``args.yaml``."""
    args_yaml = folder / "args.yaml"
    saved = yaml.safe_load(args_yaml.read_text()) if args_yaml.is_file() else {}
    size = (saved or {}).get("img_size") or _IMAGE_SIZE.get(data, 224)
    return [record["model_args"]["input_chans"], size, size]


def _run_one(spec: ModelSpec, seed: int, width: Optional[int], recipe: dict[str, Any], extra: list[str],
             folder: Path, quiet: bool) -> dict[str, Any]:
    """Train one (model, seed) unless already finished; returns its result record."""
    from .train import train

    done = folder / "result.json"
    remove_leftover_temps(folder, [done.name])  # of a write that was interrupted (train cleans up its own)
    identity = {"model": spec.label, "seed": seed, "width": width, "recipe": recipe, "extra": extra}
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("identity") != identity:
            raise CompareError(f"{folder} holds a finished run with a different recipe ({record.get('identity')}); "
                               "use another --output or delete that folder")
        record.setdefault("input_size", _saved_input_size(folder, record, recipe["data"]))
        return record
    kwargs = dict(spec.kwargs)
    if width is not None:
        kwargs.setdefault("width", width)
    # Precedence: train defaults < the recipe < options after `--` < this run's identity.
    config = {**recipe, **_train_options(spec, extra), "model": spec.name, "model_kwargs": kwargs, "seed": seed,
              "output": str(folder), "resume": "auto", "quiet": quiet}
    result = train(config)
    record = {
        "identity": identity,
        "model": spec.label,
        "seed": seed,
        "final": result["final"],
        "best_top1": result["best_top1"],
        "history": result["history"],
        "model_args": result["model_args"],
        "input_size": result["input_size"],
    }
    atomic_write_text(done, json.dumps(record, indent=1, default=str))
    return record


def _profile(record: dict[str, Any]) -> tuple[int, int]:
    """Parameters and MACs of a run's model at the input size the run used."""
    from ..models import create_model
    from ..tools.flops import profile_model

    margs = record["model_args"]
    model = create_model(margs["name"], num_classes=margs["num_classes"], **margs["kwargs"])
    prof = profile_model(model, (1, *record["input_size"]))
    return prof.params, prof.macs


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: params, MACs (at the runs' input size), top-1 mean/std over seeds, images per second."""
    rows = []
    for label in dict.fromkeys(r["model"] for r in records):
        runs = [r for r in records if r["model"] == label]
        top1 = [r["final"]["val_top1"] for r in runs]
        train_ips = [statistics.fmean(h["train_images_per_s"] for h in r["history"]) for r in runs]
        eval_ips = [statistics.fmean(h["eval_images_per_s"] for h in r["history"]) for r in runs]
        params, macs = _profile(runs[0])
        m, s = _mean_std(top1)
        rows.append({"model": label, "params": params, "macs": macs, "top1_mean": m, "top1_std": s,
                     "top1_runs": top1, "seeds": [r["seed"] for r in runs],
                     "train_images_per_s": statistics.fmean(train_ips),
                     "eval_images_per_s": statistics.fmean(eval_ips)})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison table in markdown."""
    header = ["model", "params", "FLOPs (MACs)", "top-1 (%) mean ± std", "seeds", "train img/s", "eval img/s"]
    return markdown_table(header, [
        [r["model"], f"{r['params'] / 1e3:.1f}k", f"{r['macs'] / 1e6:.2f}M",
         f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}", len(r["seeds"]), f"{r['train_images_per_s']:.0f}",
         f"{r['eval_images_per_s']:.0f}"] for r in rows])


def plot(rows: list[dict[str, Any]], path: Path) -> Optional[Path]:
    """Top-1 (mean ± std) and training throughput per model, side by side; None without matplotlib."""
    plt = pyplot()
    if plt is None:  # plotting is optional
        return None
    labels = [r["model"].replace("_cifar_resnet20", "").replace(":", "\n") for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(rows) + 4), 4))
    a1.bar(labels, [r["top1_mean"] for r in rows], yerr=[r["top1_std"] for r in rows], capsize=4, color="tab:blue")
    lo = min(r["top1_mean"] - r["top1_std"] for r in rows)
    a1.set_ylim(max(0.0, lo - 2.0), 100.0)
    a1.set_ylabel("val top-1 (%)")
    a2.bar(labels, [r["train_images_per_s"] for r in rows], color="tab:orange")
    a2.set_ylabel("train images / s")
    for ax in (a1, a2):
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
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
                   help="default: the main job (~10-15 min, 2 cores); quick: smoke (<2 min); study, ablations: "
                        "~1 h each")
    p.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    p.add_argument("--models", nargs="+", default=None, metavar="SPEC", help="NAME[:key=value...] (default: preset's)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: preset's")
    p.add_argument("--width", type=int, default=None, help="base width passed to every model (default: preset's)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--val-subset", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--data", default="fashion_mnist", help="fashion_mnist (default, offline), cifar10, cifar100")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", type=Path, default=None,
                   help="default: runs/compare-<preset> (the published tables: results/compare-<preset>)")
    p.add_argument("--verbose", action="store_true", help="show each run's progress")
    p.add_argument("train_options", nargs=argparse.REMAINDER,
                   help="after `--`: more `pedconv train` options for every run")
    return p


def run_compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run (or continue) the comparison described by parsed ``args``; returns the table rows.

    Raises:
        UsageError: bad or repeated model specs; CompareError: the output folder holds runs of
        another recipe; and what :func:`pedconv.training.train.train` raises.
    """
    preset = PRESETS[args.preset]
    specs = [parse_spec(s) for s in (args.models or preset["models"])]
    if len({s.label for s in specs}) != len(specs):
        raise UsageError("--models lists the same model spec twice")
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    width = args.width if args.width is not None else preset["width"]
    recipe = _recipe(args, preset)
    extra = [a for a in (args.train_options or []) if a != "--"]
    out = args.output or Path("runs") / f"compare-{args.preset}"
    out.mkdir(parents=True, exist_ok=True)
    remove_leftover_temps(out, _REPORTS)
    n_runs = len(specs) * len(seeds)
    images = recipe["epochs"] * (recipe.get("train_subset") or 60000)
    print(f"pedconv compare [{args.preset}]: {len(specs)} models x {len(seeds)} seeds = {n_runs} runs; each "
          f"{recipe['epochs']} epochs on {recipe.get('train_subset') or 'all'} training images ({images} images), "
          f"width {width}, batch {recipe['batch_size']}, lr {recipe['lr']} per 256; data {args.data}; output {out}",
          flush=True)
    records, start = [], time.time()
    for seed in seeds:
        for spec in specs:
            folder = out / "runs" / spec.folder / f"seed{seed}"
            t0 = time.time()
            cached = (folder / "result.json").is_file()
            rec = _run_one(spec, seed, width, recipe, extra, folder, quiet=not args.verbose)
            records.append(rec)
            f = rec["final"]
            print(f"  {spec.label:<48} seed {seed}: top-1 {f['val_top1']:.2f}%  "
                  + ("(finished earlier)" if cached else f"({time.time() - t0:.0f} s)"), flush=True)
    rows = summarize(records)
    meta = {"preset": args.preset, "recipe": recipe, "width": width, "seeds": seeds, "extra_train_options": extra,
            "wall_time_s": time.time() - start, "date": time.strftime("%Y-%m-%d"), "machine": machine_description()}
    _write_reports(rows, meta, out, start)
    return rows


def _write_reports(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path, start: float) -> None:
    table = markdown(rows)
    md, js, png_path = (out / name for name in _REPORTS)
    atomic_write_text(md, table)
    atomic_write_text(js, json.dumps({"meta": meta, "rows": rows}, indent=1))
    png = plot(rows, png_path)
    print()
    print(table)
    print(f"wrote {md}, {js}" + (f", {png}" if png else "")
          + f"  ({time.time() - start:.0f} s)")


def run(args: argparse.Namespace) -> int:
    """``pedconv compare`` on parsed options; errors propagate to :func:`pedconv.cli.main`, which prints them."""
    run_compare(args)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pedconv compare`` entry point: exit status 0 ok, 1 error, 2 usage error."""
    from ..cli import main as cli_main

    return cli_main(["compare", *(sys.argv[1:] if argv is None else argv)])
