"""Does PEDConv's generator output vary between inputs? A per-layer measurement.

For trained runs (``pedconv train`` / ``pedconv compare`` run folders holding ``last.pt``),
feeds real Fashion-MNIST test images through the network and records, at every PEDConv
layer, the eval-mode factors of Eq. (2) (``layer.cp_factors``: the Gaussian mean, no
sampling) and the CP tensor ``T_b = sum_r gamma (x) phi (x) psi`` that multiplies ``W_base``.

The spread across inputs is the coefficient of variation over the batch, averaged over the
entries: ``mean_j std_b(v_bj) / mean_j |mean_b v_bj|`` in percent, for gamma, phi, psi and
T. 0 % means a static layer (the same kernel for every image); the conv's actual per-input
change is the T column. Runs trained with different info-max weights (``infomax=false``,
``infomax_weight``) answer whether info-max makes the components vary more.

Usage::

    python experiments/component_spread.py RUN [RUN ...] [--labels A B ...] [--images 1000]
        [--out results/component_spread]

Writes ``<out>.json`` and ``<out>.md`` (one row per layer, one column group per run).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch import Tensor

from pedconv.method.cp import cp_tensor
from pedconv.method.pedconv_nd import PEDConvNd
from pedconv.tasks.classification.data import build_data
from pedconv.training.resume import model_from_checkpoint
from pedconv.utils.reporting import machine_description, markdown_table

PARTS = ("gamma", "phi", "psi", "T")


def variation(v: Tensor) -> float:
    """Coefficient of variation over the batch (dim 0), averaged over the entries, in percent."""
    v = v.flatten(1).double()
    return float(100.0 * v.std(0).mean() / v.mean(0).abs().mean().clamp_min(1e-12))


def val_images(data_dir: str | None, count: int) -> tuple[Tensor, Tensor]:
    """The first ``count`` Fashion-MNIST test images, normalised as training normalises them."""
    spec = build_data("fashion_mnist", data_dir=data_dir, val_subset=count)
    x, y = spec.val[list(range(spec.num_val))]  # type: ignore[index]
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    return (x.view(x.shape[0], spec.in_chans, *spec.input_size) - mean) / std, y


def measure(run: Path, images: Tensor) -> dict[str, dict[str, float]]:
    """``{layer name: {gamma, phi, psi, T: variation %}}`` for the run's ``last.pt``."""
    model, margs, _ = model_from_checkpoint(run / "last.pt" if run.is_dir() else run)
    model.eval()
    inputs: dict[str, Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0]))
             for name, m in model.named_modules() if isinstance(m, PEDConvNd)]
    if not hooks:
        raise SystemExit(f"{run}: {margs.name} has no PEDConv layer")
    with torch.no_grad():
        if images.shape[1] != margs.input_chans:
            images = images.expand(-1, margs.input_chans, -1, -1)
        model(images)
    for h in hooks:
        h.remove()
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, PEDConvNd):
            f = m.cp_factors(inputs[name])
            t = cp_tensor(f, m.weight.shape)
            out[name] = {"gamma": variation(f.gamma), "phi": variation(f.phi), "psi": variation(f.psi),
                         "T": variation(t)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (their last.pt) or checkpoints")
    p.add_argument("--labels", nargs="+", default=None, help="a column label per run (default: folder names)")
    p.add_argument("--images", type=int, default=1000, help="test images fed through each network")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=Path("results/component_spread"))
    args = p.parse_args()
    labels = args.labels or [f"{r.parent.name}/{r.name}" for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("--labels needs one label per run")
    torch.manual_seed(0)
    images, _ = val_images(args.data_dir, args.images)
    results = {label: measure(run, images) for label, run in zip(labels, args.runs)}
    layers = list(next(iter(results.values())))
    header = ["layer"] + [f"{label}: {part}" for label in labels for part in PARTS]
    body = [[layer] + [f"{results[label][layer][part]:.2f}" if layer in results[label] else "—"
                       for label in labels for part in PARTS] for layer in layers]
    body.append(["mean over layers"] + [f"{statistics.fmean(r[part] for r in results[label].values()):.2f}"
                                        for label in labels for part in PARTS])
    table = markdown_table(header, body)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"runs": [str(r) for r in args.runs], "labels": labels, "images": args.images,
            "machine": machine_description(), "metric": "coefficient of variation over inputs, % (mean over entries)"}
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
