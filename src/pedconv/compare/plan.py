"""What a comparison runs, from its options: model specs, the shared recipe, each run's options."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError
from ..training.task import Task
from ..utils.kv import KeyValueError, parse_key_values
from .presets import load_preset

__all__ = ["TASKS", "ModelSpec", "Plan", "compact", "init_source", "make_plan", "parse_spec", "run_config",
           "shared_recipe", "task_of", "train_options"]


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
        return self.name + "".join(f":{k}={compact(v)}" for k, v in self.kwargs.items())

    @property
    def folder(self) -> str:
        """The label made safe as a folder name."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label.replace(":", "__"))


def compact(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(compact(x) for x in v) + "]"
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


# What ``--task`` compares: the task, and its static and PEDConv models (the default --models).
TASKS: dict[str, tuple[str, str, str]] = {
    "train": ("pedconv.tasks.classification.task:Classification", "cifar_resnet20", "pedconv_cifar_resnet20"),
    "detect": ("pedconv.tasks.detection.task:Detection", "ssd300_resnet18", "pedconv_ssd300_resnet18"),
    "segment": ("pedconv.tasks.segmentation.task:Segmentation", "upernet_resnet18", "pedconv_upernet_resnet18"),
    "adv": ("pedconv.tasks.adversarial.task:AdversarialTraining", "cifar_resnet20", "pedconv_cifar_resnet20"),
}
# Seeds of a task comparison when --seeds is not given (classification's come from its preset).
TASK_SEEDS = [0, 1, 2]


def task_of(name: str) -> Task:
    """The :class:`~pedconv.training.task.Task` that ``--task name`` trains.

    >>> task_of("segment").best_metric
    'mIoU'
    """
    import importlib

    module, cls = TASKS[name][0].split(":")
    return getattr(importlib.import_module(module), cls)()


def shared_recipe(args: argparse.Namespace, preset: dict[str, Any]) -> dict[str, Any]:
    """The training options every run of this comparison shares: classification's from the
    comparison preset, another task's as the name of its own preset (``--quick``: ``quick``)."""
    if args.task != "train":
        recipe: dict[str, Any] = {"preset": args.preset}
        # The preset's builder options (UperNet's 64 decoder channels, Free-AT's width 8) hold for
        # every compared model; a spec's own key=values go over them (run_config).
        preset_kwargs = task_of(args.task).presets[args.preset].get("model_kwargs")
        if preset_kwargs:
            recipe["model_kwargs"] = dict(preset_kwargs)
        if args.data is not None:
            recipe["data"] = args.data
        if args.data_dir is not None:
            recipe["data_dir"] = args.data_dir
    else:
        recipe = {"data": args.data or "fashion_mnist", "data_dir": args.data_dir, **preset["train"]}
    for key in ("epochs", "train_subset", "val_subset", "batch_size", "lr"):
        value = getattr(args, key)
        if value is not None:
            recipe[key] = value
    return recipe


def train_options(spec: ModelSpec, extra: list[str], task: str = "train") -> dict[str, Any]:
    """The options that ``extra`` (the task's train flags after ``--``) set for this model."""
    if not extra:
        return {}
    from ..cli import parse_args

    command = ["train"] if task == "train" else [task, "train"]
    # Not validated here: validate_args checks each run's options as a whole.
    plain, with_extra = (vars(parse_args([*command, "--model", spec.name, *more], validate=False))
                         for more in ([], extra))
    return {k: v for k, v in with_extra.items() if plain.get(k) != v and k not in ("command", "action")}


def run_config(spec: ModelSpec, seed: int, width: Optional[int], recipe: dict[str, Any], extra: list[str],
               folder: Path, quiet: bool, init_from: Optional[Path] = None, task: str = "train") -> dict[str, Any]:
    """The training options of one (model, seed) run: the recipe's builder options (a task
    preset's ``model_kwargs``) under the spec's own."""
    kwargs = {**recipe.get("model_kwargs", {}), **spec.kwargs}
    if width is not None:
        kwargs.setdefault("width", width)
    start = {"init_from": str(init_source(init_from, seed))} if init_from is not None else {}
    # Precedence: train defaults < the recipe < options after `--` < this run's identity.
    return {**recipe, **train_options(spec, extra, task), "model": spec.name, "model_kwargs": kwargs, "seed": seed,
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


@dataclass
class Plan:
    """What a comparison does, from its options: the runs, their shared recipe, the folder."""

    preset: str
    specs: list[ModelSpec]
    seeds: list[int]
    width: Optional[int]
    recipe: dict[str, Any]
    extra: list[str]
    out: Path
    init_from: Optional[Path] = None
    task: str = "train"
    init_models: Optional[list[ModelSpec]] = None

    def init_for(self, spec: ModelSpec) -> Optional[Path]:
        """Where ``spec``'s runs start from: the ``--init-from`` comparison (which then holds one
        model), or with ``--init-models`` the folder of the model at ``spec``'s position there
        (the transfer study: static from static, PEDConv from PEDConv)."""
        if self.init_from is None or not self.init_models:
            return self.init_from
        return self.init_from / "runs" / self.init_models[self.specs.index(spec)].folder

    @property
    def runs(self) -> list[tuple[ModelSpec, int, Path]]:
        """``(spec, seed, run folder)`` in the order they run: every model of seed 0, then seed 1..."""
        return [(spec, seed, self.out / "runs" / spec.folder / f"seed{seed}") for seed in self.seeds
                for spec in self.specs]


def make_plan(args: argparse.Namespace) -> Plan:
    """The runs, recipe and folder that parsed ``pedconv compare`` options describe.

    Raises:
        UsageError: an unknown preset for the task, or the same model spec twice.
    """
    task = getattr(args, "task", "train")
    extra = [a for a in (args.train_options or []) if a != "--"]
    if task != "train":
        args.preset = "quick" if args.preset in (None, "default") else args.preset
        presets = task_of(task).presets
        if args.preset not in presets:
            raise UsageError(f"--task {task} --preset {args.preset}: the task's presets are "
                             f"{', '.join(sorted(presets))}")
        specs = [parse_spec(s) for s in (args.models or TASKS[task][1:])]
        if len({s.label for s in specs}) != len(specs):
            raise UsageError("--models lists the same model spec twice")
        return Plan(args.preset, specs, args.seeds if args.seeds is not None else TASK_SEEDS, args.width,
                    shared_recipe(args, {}), extra, args.output or Path("runs") / f"compare-{task}-{args.preset}",
                    args.init_from, task, _init_models(args, specs))
    args.preset = args.preset or "default"
    preset = load_preset(args.preset)  # a shipped study's name or a study file
    name = Path(args.preset).stem
    specs = [parse_spec(s) for s in (args.models or preset["models"])]
    if len({s.label for s in specs}) != len(specs):
        raise UsageError("--models lists the same model spec twice")
    return Plan(name, specs, args.seeds if args.seeds is not None else preset["seeds"],
                args.width if args.width is not None else preset["width"], shared_recipe(args, preset), extra,
                args.output or Path("runs") / f"compare-{name}",
                args.init_from or (Path(preset["init_from"]) if "init_from" in preset else None), "train",
                _init_models(args, specs))


def _init_models(args: argparse.Namespace, specs: list[ModelSpec]) -> Optional[list[ModelSpec]]:
    """``--init-models``: one model of the ``--init-from`` comparison per ``--models`` entry."""
    names = getattr(args, "init_models", None)
    if not names:
        return None
    if args.init_from is None:
        raise UsageError("--init-models names models of the --init-from comparison: give --init-from too")
    if len(names) != len(specs):
        raise UsageError(f"--init-models gives {len(names)} models for {len(specs)} compared ones: one each, in order")
    return [parse_spec(n) for n in names]
