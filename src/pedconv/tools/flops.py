"""Parameters and FLOPs (multiply-adds, the paper's convention) of any model.

Convolutions, linear layers and the generators' / attentions' matrix products are counted
by ``torch.utils.flop_counter.FlopCounterMode`` (which reports 2 FLOPs per multiply-add; we
halve it). Every dynamic layer reports its own cost by the paper's convention
(:class:`CountsMacs`: ``layer.macs(output_shape, measured)``), from what the counter measured
in its generator / attention submodules plus what the counter cannot see or would count by
the execution strategy's arrangement (e.g. forming the CP tensor of Eq. (2),
``2 * R * Cout * Cin/groups * k^2`` per sample, Sec. 3). The counter never needs to know a
layer's insides.

Parameters are reported for deployment (info-max decoders excluded: they exist only in
training) and for training. Every command states them the same way, through
:func:`count_parameters` and :func:`parameter_summary` (``74.0k parameters (+5.1k info-max
decoder, training only)``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..method.base import PEDConvBase
from ..models.paper import PAPER_NUMBERS
from ..utils.atomic import atomic_write_text
from ..utils.options import positive_int
from ..utils.reporting import csv_table, markdown_table

__all__ = ["CountsMacs", "ModelProfile", "build_parser", "compare_to_paper", "count_parameters", "dynamic_layers",
           "format_count", "main", "paper_table", "parameter_summary", "profile_model", "run"]


@dataclass
class ModelProfile:
    """What :func:`profile_model` measures. MACs are multiply-adds at ``input_size``;
    ``dynamic_macs`` is what the dynamic layers cost beyond static convs of the same shapes
    (generators / attentions, forming and applying the per-sample weights)."""

    params: int
    params_train: int
    macs: int
    dynamic_macs: int
    input_size: tuple[int, ...]
    layers: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class CountsMacs(Protocol):
    """A layer that reports its own multiply-adds (every dynamic layer in pedconv does).

    ``macs(output_shape, measured)`` is the layer's cost by the paper's convention, where
    ``measured(submodule)`` gives what ``FlopCounterMode`` measured inside one of its
    submodules; ``static_macs(output_shape)`` is a static conv of the same shape.
    """

    def macs(self, output_shape: Sequence[int], measured: Callable[[nn.Module], int]) -> int: ...

    def static_macs(self, output_shape: Sequence[int]) -> int: ...


def dynamic_layers(model: nn.Module) -> list[nn.Module]:
    """The dynamic layers of ``model``: those that count their own multiply-adds
    (:class:`CountsMacs`: PEDConv, the spatial variant and every baseline layer).

    >>> import pedconv
    >>> len(dynamic_layers(pedconv.create_model("pedconv_cifar_resnet20", width=8))), len(dynamic_layers(
    ...     pedconv.create_model("cifar_resnet20", width=8)))
    (18, 0)
    """
    return [m for m in model.modules() if isinstance(m, CountsMacs)]


def profile_model(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> ModelProfile:
    """Count parameters and multiply-adds of ``model`` in eval mode at ``input_size``.

    Args:
        model: any module; PEDConv layers get their weight-application cost added.
        input_size: full input shape, batch included (the paper's numbers use batch 1).

    Returns:
        A :class:`ModelProfile` with totals and one row per convolution / linear layer.

    Example:
        >>> import pedconv
        >>> p = pedconv.profile_model(pedconv.create_model("pedconv_resnet18"))
        >>> round(p.params / 1e6, 2), round(p.macs / 1e9, 2)  # Table 1b: 11.9M, 1.83G
        (11.92, 1.84)
    """
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = FlopCounterMode(display=False, depth=None)  # type: ignore[arg-type]  # None = every depth
    shapes: dict[nn.Module, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _, out: shapes.__setitem__(mod, tuple(out.shape)))
        for m in model.modules() if isinstance(m, CountsMacs)
    ]
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(tuple(input_size), device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    rows, total, dynamic = _rows(model, counter.get_flop_counts(), shapes)
    total += counter.get_total_flops() // 2
    params, decoder_params = count_parameters(model)
    return ModelProfile(params=params, params_train=params + decoder_params, macs=total,
                        dynamic_macs=dynamic, input_size=tuple(input_size), layers=rows)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(deployable parameters, info-max decoder parameters)`` of ``model``: the decoders are
    training-only (:func:`pedconv.strip_infomax` removes them), so they are counted apart.

    >>> import pedconv
    >>> count_parameters(pedconv.create_model("pedconv_cifar_resnet20", num_classes=10, in_chans=1, width=8))
    (74012, 4872)
    """
    decoder = sum(_decoder_params(m) for m in model.modules())
    return sum(p.numel() for p in model.parameters()) - decoder, decoder


def format_count(n: float) -> str:
    """A parameter or MAC count as the tables show it.

    >>> format_count(512), format_count(73_993), format_count(11_689_512), format_count(4_130_000_000)
    ('512', '74.0k', '11.69M', '4.13G')
    """
    for scale, unit, digits in ((1e9, "G", 2), (1e6, "M", 2), (1e3, "k", 1)):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{unit}"
    return f"{n:.0f}"


def parameter_summary(params: int, decoder: int = 0) -> str:
    """How every command states a model's size: the deployable count, and the training-only
    info-max decoders apart (as :func:`count_parameters` splits them).

    >>> parameter_summary(74_012, 4_872), parameter_summary(68_576)
    ('74.0k parameters (+4.9k info-max decoder, training only)', '68.6k parameters')
    """
    text = f"{format_count(params)} parameters"
    return text + (f" (+{format_count(decoder)} info-max decoder, training only)" if decoder else "")


def _decoder_params(m: nn.Module) -> int:
    """Parameters of a PEDConv layer's training-only info-max decoder."""
    if isinstance(m, PEDConvBase) and m.decoder is not None:
        return sum(p.numel() for p in m.decoder.parameters())
    return 0


def _rows(
    model: nn.Module, counts: dict[str, dict[Any, int]], shapes: dict[nn.Module, tuple[int, ...]]
) -> tuple[list[dict[str, Any]], int, int]:
    """One row per conv / linear / dynamic layer (a dynamic layer's insides are summed into
    its row), the correction to the counter's total, and the dynamic overhead."""
    root = type(model).__name__
    keys = {m: (f"{root}.{name}" if name else root) for name, m in model.named_modules()}

    def measured(m: nn.Module) -> int:
        return sum(counts.get(keys[m], {}).values()) // 2

    inside = {id(sub) for m in shapes for sub in m.modules() if sub is not m}
    rows, correction, dynamic = [], 0, 0
    for name, m in model.named_modules():
        counted_layer = isinstance(m, (nn.Conv2d, nn.Linear, CountsMacs))
        if id(m) in inside or not counted_layer:
            continue
        macs, shape = measured(m), shapes.get(m)
        if shape is not None and isinstance(m, CountsMacs):
            recount = m.macs(shape, measured)
            correction += recount - macs
            macs = recount
            dynamic += macs - m.static_macs(shape)
        own = sum(p.numel() for p in m.parameters()) - _decoder_params(m)
        rows.append(dict(name=name, type=type(m).__name__, params=own, macs=macs))
    return rows, correction, dynamic


def compare_to_paper(
    names: Sequence[str], input_size: Optional[Sequence[int]] = None, layers: Optional[list[dict]] = None
) -> list[dict]:
    """Profile registered models and set them beside :data:`PAPER_NUMBERS`.

    Args:
        names: registered model names.
        input_size: the profiled input shape; by default each row's published resolution
            (``(1, 3, s, s)`` with the row's ``input_size``, 224 if it has none). Each model is
            built with its row's ``num_classes`` (1000 if none).
        layers: if given, every model's per-layer rows are appended to it (with ``model``).
    """
    from ..models import create_model

    out = []
    for name in names:
        paper = PAPER_NUMBERS.get(name, {})
        side = paper.get("input_size", 224)
        shape = tuple(input_size) if input_size is not None else (1, 3, side, side)
        prof = profile_model(create_model(name, num_classes=paper.get("num_classes", 1000)), shape)
        if layers is not None:
            layers.extend({"model": name, **r} for r in prof.layers)
        row: dict[str, Any] = dict(model=name, input_size=shape[-1], params=prof.params,
                                   params_train=prof.params_train, macs=prof.macs, dynamic_macs=prof.dynamic_macs,
                                   paper_params=paper.get("params"), paper_macs=paper.get("macs"),
                                   source=paper.get("source", ""))
        for k in ("params", "macs"):
            ref = row[f"paper_{k}"]
            row[f"{k}_diff_pct"] = None if ref is None else 100.0 * (row[k] - ref) / ref
        out.append(row)
    return out


# ----------------------------------------------------------------------------- ``pedconv profile``
def _fmt(v: Optional[float], scale: float, unit: str) -> str:
    return "—" if v is None else f"{v / scale:.2f}{unit}"


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:+.1f}%"


def paper_table(rows: list[dict]) -> str:
    """The :func:`compare_to_paper` rows as a markdown table (``pedconv profile``'s report)."""
    header = ["model", "paper row", "input", "params", "paper", "diff", "FLOPs (MACs)", "paper", "diff",
              "dynamic overhead", "params incl. decoder"]
    return markdown_table(header, [
        [r["model"], r["source"], r.get("input_size", "—"), _fmt(r["params"], 1e6, "M"),
         _fmt(r["paper_params"], 1e6, "M"),
         _pct(r["params_diff_pct"]), _fmt(r["macs"], 1e9, "G"), _fmt(r["paper_macs"], 1e9, "G"),
         _pct(r["macs_diff_pct"]), _fmt(r["dynamic_macs"], 1e6, "M"), _fmt(r["params_train"], 1e6, "M")]
        for r in rows])


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv profile`` options, added to ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--models", "pedconv_resnet18", "--input-size", "160"]).input_size
    160
    """
    p = parser or argparse.ArgumentParser(prog="pedconv profile", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(PAPER_NUMBERS),
                   help="registered model names (default: every row of PAPER_NUMBERS)")
    p.add_argument("--input-size", type=positive_int, default=None,
                   help="image side in pixels (default: each row's published resolution, 224 for ImageNet models)")
    p.add_argument("--out", type=Path, default=Path("results/profile"), help="output prefix (.md, .json, .csv)")
    p.add_argument("--layers", action="store_true", help="also write every layer's params/MACs to <out>.layers.csv")
    return p


def run(args: argparse.Namespace) -> int:
    """``pedconv profile`` on parsed options: print the table, write ``<out>.md/.json/.csv`` (and the layers)."""
    layer_rows: Optional[list[dict]] = [] if args.layers else None
    size = None if args.input_size is None else (1, 3, args.input_size, args.input_size)
    rows = compare_to_paper(args.models, size, layer_rows)
    md = paper_table(rows)
    print(md)
    atomic_write_text(args.out.with_suffix(".md"), md)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(rows, indent=1))
    atomic_write_text(args.out.with_suffix(".csv"), csv_table(rows))
    written = f"{args.out}.md, .json, .csv"
    if layer_rows:
        path = atomic_write_text(args.out.with_suffix(".layers.csv"), csv_table(layer_rows))
        written += f", {path}"
    print(f"wrote {written}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pedconv profile`` entry point: the exit status."""
    from ..cli import main as cli_main

    return cli_main(["profile", *(sys.argv[1:] if argv is None else argv)])
