"""ONNX deployment of a converted ResNet-18: graph size by op type and ONNX Runtime latency.

Exports, with dynamic batch, torchvision's ResNet-18 (random weights, seed 0):

* ``static``        the static model;
* ``previous``      ``pedconv.convert(...)`` in eval mode, exported with the factored
                    strategy's previous traceable form (per-tap slices, ``[:, :, None, None]``
                    indexing, ``unfold``; reproduced here by routing the export through
                    ``factored``), BatchNorms unfused;
* ``pedconv``       converted, ``strip_infomax`` + ``fuse_bn``, the export form of
                    :mod:`pedconv.execution.export` (what ``torch.onnx.export`` gives now);
* ``pedconv_taps``  the same with the taps form for stride-1 layers (``taps=True``);
* ``pedconv_opt``   ``pedconv`` after the optional ``onnxscript`` optimiser pass.

Counts nodes by op type for the TorchScript exporter (and the dynamo exporter unless
``--no-dynamo``), checks that every ONNX ``Conv`` weight is constant and that ONNX Runtime
matches eager, and times ONNX Runtime (CPUExecutionProvider, ``--threads`` intra-op
threads) at batch 1 and 8, 224x224, interleaving the models, median of ``--repeats`` runs.

Usage::

    python experiments/onnx_deploy.py                  # ~3 min on 2 cores
    python experiments/onnx_deploy.py --no-dynamo --repeats 5   # quicker

Prints a markdown table and writes ``results/deploy/onnx.{md,json}``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torchvision

import pedconv
import pedconv.execution.dispatch as dispatch
from pedconv.deploy import data_dependent_conv_weights, op_counts, optimize_onnx
from pedconv.execution.export import export_conv2d
from pedconv.execution.factored import factored
from pedconv.testing import randomize_generator
from pedconv.utils.atomic import atomic_write_text
from pedconv.utils.reporting import machine_description, markdown_table

SIZE = 224
BATCHES = (1, 8)
KEY_OPS = ("Conv", "Constant", "Unsqueeze", "Slice", "Gather", "Shape", "Reshape", "Mul", "BatchNormalization")


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    static = torchvision.models.resnet18().eval()
    converted = pedconv.convert(torchvision.models.resnet18()).eval()
    for m in converted.modules():
        if isinstance(m, pedconv.PEDConv2d):
            randomize_generator(m, 0.3)  # components that differ between inputs
    deployed = pedconv.fuse_bn(pedconv.strip_infomax(copy.deepcopy(converted)))
    return {"static": static, "previous": converted, "pedconv": deployed}


def _export(model: torch.nn.Module, path: Path, dynamo: bool, form: str = "export") -> Path:
    x = torch.randn(2, 3, SIZE, SIZE)
    kw: dict = (
        dict(dynamic_shapes=({0: torch.export.Dim("batch")},)) if dynamo
        else dict(dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    )
    route = {"export": export_conv2d, "taps": functools.partial(export_conv2d, taps=True), "previous": factored}
    with warnings.catch_warnings(), mock.patch.object(dispatch, "export_conv2d", route[form]):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=dynamo, **kw)
    return path


def _time(sessions: dict, repeats: int, batch: int) -> dict[str, float]:
    x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    for s in sessions.values():  # warm-up
        s.run(None, {"x": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for name, s in sessions.items():  # interleaved
            t0 = time.perf_counter()
            s.run(None, {"x": x})
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-dynamo", action="store_true", help="skip the dynamo exporter's counts")
    parser.add_argument("--out", type=Path, default=Path("results/deploy"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = _models()
    tmp = Path(tempfile.mkdtemp())
    paths = {
        "static": _export(models["static"], tmp / "static.onnx", False),
        "previous": _export(models["previous"], tmp / "previous.onnx", False, "previous"),
        "pedconv": _export(models["pedconv"], tmp / "pedconv.onnx", False),
        "pedconv_taps": _export(models["pedconv"], tmp / "pedconv_taps.onnx", False, "taps"),
    }
    import onnx

    onnx.save(optimize_onnx(paths["pedconv"]), str(tmp / "pedconv_opt.onnx"))
    paths["pedconv_opt"] = tmp / "pedconv_opt.onnx"
    counts = {f"torchscript/{k}": op_counts(p) for k, p in paths.items()}
    data_dependent = {k: len(data_dependent_conv_weights(p)) for k, p in paths.items()}
    if not args.no_dynamo:
        for k, form in (("static", "export"), ("previous", "previous"), ("pedconv", "export")):
            path = _export(models[k], tmp / f"dyn_{k}.onnx", True, form)
            counts[f"dynamo/{k}"] = op_counts(path)
            data_dependent[f"dynamo/{k}"] = len(data_dependent_conv_weights(path))
        optimized = optimize_onnx(tmp / "dyn_pedconv.onnx")
        counts["dynamo/pedconv_opt"] = op_counts(optimized)
        data_dependent["dynamo/pedconv_opt"] = len(data_dependent_conv_weights(optimized))

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    xcheck = torch.randn(3, 3, SIZE, SIZE)
    max_diff = {}
    with torch.no_grad():
        for k, s in sessions.items():
            ref = models["static" if k == "static" else "previous"](xcheck).numpy()
            diff = np.abs(s.run(None, {"x": xcheck.numpy()})[0] - ref).max()
            max_diff[k] = float(diff / np.abs(ref).max())  # relative to the largest logit
    latency = {b: _time(sessions, args.repeats, b) for b in BATCHES}

    rows = []
    for name in paths:
        c = counts[f"torchscript/{name}"]
        rows.append([name, sum(c.values()), *(c.get(op, 0) for op in KEY_OPS), data_dependent[name],
                     f"{max_diff[name]:.1e}",
                     *(f"{latency[b][name]:.1f} ({latency[b][name] / latency[b]['static']:.2f}x)" for b in BATCHES)])
    table = markdown_table(
        ["model", "nodes", *KEY_OPS, "data-dep. conv weights", "max |ORT - eager| / max |eager|",
         *(f"ORT ms, batch {b} (vs static)" for b in BATCHES)],
        rows,
    )
    dyn = "\n".join(
        f"- {k}: {sum(c.values())} nodes, {data_dependent[k]} computed conv weights; {c}"
        for k, c in counts.items() if k.startswith("dynamo/")
    )
    machine = f"{machine_description()}; onnxruntime {ort.__version__} CPUExecutionProvider, {args.threads} threads"
    text = (f"# ONNX export of a converted ResNet-18\n\n{table}\n\n"
            f"TorchScript exporter (dynamo=False), dynamic batch, {SIZE}x{SIZE}; ORT latency median of "
            f"{args.repeats} interleaved runs. Machine: {machine}.\n"
            + (f"\nDynamo exporter (its own onnxscript pass on; `_opt`: `pedconv.deploy.optimize_onnx` "
               f"after it):\n{dyn}\n" if dyn else ""))
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "onnx.md", text)
    record = dict(machine=machine, size=SIZE, repeats=args.repeats, threads=args.threads, op_counts=counts,
                  data_dependent_conv_weights=data_dependent, max_diff_vs_eager_relative=max_diff,
                  latency_ms={str(b): v for b, v in latency.items()},
                  latency_ratio_vs_static={str(b): {k: v / latency[b]["static"] for k, v in latency[b].items()}
                                           for b in BATCHES})
    atomic_write_text(args.out / "onnx.json", json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
