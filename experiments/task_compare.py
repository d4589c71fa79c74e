"""Static vs PEDConv on the downstream tasks' offline sets: metric mean ± std over seeds, params, FLOPs, speed.

For each task (``pedconv detect`` / ``segment`` / ``adv``), trains the static model and its
PEDConv version with the task's ``--quick`` preset, one run per seed, through
:func:`pedconv.training.train.train` (every run is a normal run folder, resumable: re-running
the command skips finished runs and continues interrupted ones). Then writes
``<output>/tasks.json`` and ``<output>/tasks.md``: per model, the task's metrics (mean ± std
over seeds), parameters and multiply-adds at the run's input size (:func:`pedconv.profile_model`),
and the mean train/eval images per second, with the machine they were measured on.

    python experiments/task_compare.py --output results/tasks-cpu                 # 2-core CPU: ~1 h
    python experiments/task_compare.py --tasks adv --seeds 0 1 --output /tmp/adv  # one task
    python experiments/task_compare.py --device cuda --output results/tasks-h100 --set detect:epochs=12

``--set TASK:KEY=VALUE`` changes one option of that task's runs (values parsed as YAML).

The paper's protocol (a pretrained backbone, then the task): ``--init-from COMPARISON`` starts
seed k of the static task model from seed k of the static classifier in a ``pedconv compare``
output folder, and seed k of the PEDConv task model from seed k of the PEDConv classifier
(``--init-models STATIC PEDCONV``, default ``resnet18 pedconv_resnet18``); the tables then also
give the PEDConv - static difference per seed.

    pedconv compare --models resnet18 pedconv_resnet18 --seeds 0 1 2 ... --output results/transfer-pretrain
    python experiments/task_compare.py --tasks detect segment --init-from results/transfer-pretrain \
        --output results/transfer-tasks
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from pedconv.tools.flops import format_count, profile_model
from pedconv.training.task import Task
from pedconv.training.train import train
from pedconv.utils.atomic import atomic_write_text
from pedconv.utils.reporting import machine_description, markdown_table

# task -> (its Task class path, the static model, the PEDConv model, extra quick options)
PAIRS: dict[str, tuple[str, str, str]] = {
    "detect": ("pedconv.tasks.detection.task:Detection", "ssd300_resnet18", "pedconv_ssd300_resnet18"),
    "segment": ("pedconv.tasks.segmentation.task:Segmentation", "upernet_resnet18", "pedconv_upernet_resnet18"),
    "adv": ("pedconv.tasks.adversarial.task:AdversarialTraining", "cifar_resnet20", "pedconv_cifar_resnet20"),
}


def _task(path: str) -> Task:
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)()


def _pretrained(comparison: Path, classifier: str, seed: int) -> str:
    """Seed ``seed``'s run of ``classifier`` in a ``pedconv compare`` folder (it must have finished)."""
    run = comparison / "runs" / classifier / f"seed{seed}"
    if not (run / "result.json").is_file():
        raise SystemExit(f"--init-from {comparison}: no finished {classifier} seed {seed} run at {run}")
    return str(run)


def _run(task: Task, model: str, seed: int, folder: Path, device: str, extra: dict[str, Any]) -> dict[str, Any]:
    done = folder / "result.json"
    if done.is_file():
        history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
        return {"result": json.loads(done.read_text()), "history": history}
    r = train({"preset": "quick", "model": model, "seed": seed, "output": str(folder), "resume": "auto",
               "quiet": True, "device": device, **extra}, task)
    return {"result": r["result"], "history": r["history"]}


def _mean_std(values: list[Any]) -> str:
    """``mean ± std`` over seeds; a metric a run could not compute (nan, or null once read back) is left out."""
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _profile(task_name: str, model: str, size: int, num_classes: int, model_kwargs: dict[str, Any]) -> tuple[int, int]:
    from pedconv.models import create_model

    in_chans = 1 if task_name == "adv" else 3
    if task_name == "adv":
        model_kwargs = {**model_kwargs, "in_chans": 1}
    net = create_model(model, num_classes=num_classes, **model_kwargs)
    prof = profile_model(net, (1, in_chans, size, size))
    return prof.params, prof.macs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=sorted(PAIRS), default=["adv", "segment", "detect"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--output", type=Path, default=Path("runs/task-compare"))
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="TASK:KEY=VALUE",
                   help="an option of one task's runs, e.g. detect:epochs=12")
    p.add_argument("--init-from", type=Path, default=None, metavar="COMPARISON",
                   help="start each seed's task models from that seed's classifiers in this `pedconv compare` folder")
    p.add_argument("--init-models", nargs=2, default=["resnet18", "pedconv_resnet18"], metavar=("STATIC", "PEDCONV"),
                   help="the classifiers of --init-from that start the static and the PEDConv task models")
    args = p.parse_args()
    overrides: dict[str, dict[str, Any]] = {name: {} for name in PAIRS}
    for item in args.set:
        name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        if name not in PAIRS or not key or not value:
            p.error(f"--set {item}: expected TASK:KEY=VALUE with TASK one of {', '.join(PAIRS)}")
        overrides[name][key.replace("-", "_")] = yaml.safe_load(value)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    report: dict[str, Any] = {"machine": machine_description(), "device": device, "seeds": args.seeds,
                              "date": time.strftime("%Y-%m-%d"), "overrides": overrides, "tasks": {}}
    changed = "; ".join(f"{t}: {o}" for t, o in overrides.items() if o) or "none"
    lines = [f"Machine: {report['machine']}, device {device}; `--quick` preset of each task, seeds {args.seeds}; "
             f"changed options: {changed}.", ""]
    for name in args.tasks:
        path, static, dynamic = PAIRS[name]
        task = _task(path)
        rows, table = [], []
        for model, classifier in zip((static, dynamic), args.init_models):
            runs = [_run(task, model, seed, args.output / name / model / f"seed{seed}", args.device,
                         {**overrides[name], **({"init_from": _pretrained(args.init_from, classifier, seed)}
                                                if args.init_from else {})})
                    for seed in args.seeds]
            results = [r["result"] for r in runs]
            first = results[0]
            kwargs = {k: v for k, v in first["model_kwargs"].items() if k != "in_chans"}
            size = first["input_size"][-1]
            params, macs = _profile(name, model, size, first["num_classes"], kwargs)
            train_ips = statistics.fmean(r["train_images_per_s"] for r in results)
            eval_ips = statistics.fmean(r["eval_images_per_s"] for r in results)
            metrics = {k: [r[k] for r in results] for k in task.result_metrics if k in results[0]}
            rows.append({"model": model, "params": params, "macs": macs, "input_size": size, "metrics": metrics,
                         "train_images_per_s": train_ips, "eval_images_per_s": eval_ips})
            table.append([model, format_count(params), f"{format_count(macs)} @{size}px",
                          *[_mean_std(v) for v in metrics.values()], f"{train_ips:.1f}", f"{eval_ips:.1f}"])
        report["tasks"][name] = rows
        header = ["model", "params", "FLOPs (MACs)", *rows[0]["metrics"], "train img/s", "eval img/s"]
        differences = {k: [d - s for s, d in zip(rows[0]["metrics"][k], rows[1]["metrics"][k])]
                       for k in rows[0]["metrics"]}
        report["tasks"][name + ":difference_per_seed"] = differences
        table.append(["PEDConv - static, per seed", "", "",
                      *(" / ".join(f"{v:+.2f}" for v in values) for values in differences.values()), "", ""])
        start_line = (f"Started from `{args.init_from}` ({' / '.join(args.init_models)}, same seed)."
                      if args.init_from else "From scratch.")
        lines += [f"### {task.train_command}", "", start_line, "", markdown_table(header, table)]
        report["wall_time_s"] = time.time() - start
        args.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output / "tasks.json", json.dumps(report, indent=1))
        atomic_write_text(args.output / "tasks.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
