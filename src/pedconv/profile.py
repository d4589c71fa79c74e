"""Parameters and FLOPs (multiply-adds, the paper's convention) of any model.

Convolutions, linear layers and the generator's matrix products are counted by
``torch.utils.flop_counter.FlopCounterMode`` (which reports 2 FLOPs per multiply-add; we
halve it). The weight application of Eq. (2) is elementwise, which the counter ignores, so
each :class:`~pedconv.PEDConv2d` adds the paper's analytic ``2 * R * Cout * Cin/groups * k^2``
(Sec. 3, complexity analysis: forming the CP tensor and the Hadamard product). Parameters
are reported for deployment (info-max decoders excluded: they exist only in training) and
for training.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .layers.pedconv2d import PEDConv2d

__all__ = ["PAPER_NUMBERS", "ModelProfile", "compare_to_paper", "profile_model"]

# Published params / FLOPs (multiply-adds) of the paper, by registered model name.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "resnet18": {"params": 11.7e6, "macs": 1.81e9, "source": "Table 1b"},
    "pedconv_resnet18": {"params": 11.9e6, "macs": 1.83e9, "source": "Table 1b"},
    "resnet50": {"params": 25.6e6, "macs": 4.1e9, "source": "Table 1b"},
    "pedconv_resnet50": {"params": 28.6e6, "macs": 4.2e9, "source": "Table 1b"},
    "resnet101": {"params": 44.6e6, "macs": 7.8e9, "source": "Table 6"},
    "mobilenetv1_100": {"params": 4.2e6, "macs": 569e6, "source": "Table 1a"},
    "pedconv_mobilenetv1_100": {"params": 5.1e6, "macs": 579e6, "source": "Table 1a"},
    "mobilenet_v2": {"params": 3.5e6, "macs": 300e6, "source": "Table 1a"},
    "pedconv_mobilenet_v2": {"params": 4.8e6, "macs": 307e6, "source": "Table 1a"},
    "efficientnet_b0": {"params": 5.3e6, "macs": 391e6, "source": "Table 1a"},
    "pedconv_efficientnet_b0": {"params": 7.2e6, "macs": 400e6, "source": "Table 1a"},
}


@dataclass
class ModelProfile:
    """What :func:`profile_model` measures. MACs are multiply-adds at ``input_size``."""

    params: int
    params_train: int
    macs: int
    dynamic_macs: int
    input_size: tuple[int, ...]
    layers: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _application_macs(layer: PEDConv2d) -> int:
    kh, kw = layer.kernel_size
    return 2 * layer.rank * layer.out_channels * (layer.in_channels // layer.groups) * kh * kw


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
        >>> round(p.params / 1e6, 1), round(p.macs / 1e9, 2)  # doctest: +SKIP
        (11.9, 1.83)
    """
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(tuple(input_size), device=device)
    counter = FlopCounterMode(display=False, depth=None)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    per_module = counter.get_flop_counts()
    decoder_params = sum(
        p.numel() for m in model.modules() if isinstance(m, PEDConv2d) and m.decoder is not None for p in m.decoder.parameters()
    )
    params_train = sum(p.numel() for p in model.parameters())
    rows, dynamic = [], 0
    root = type(model).__name__
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear, PEDConv2d)):
            continue
        key = f"{root}.{name}" if name else root
        counted = sum(per_module.get(key, {}).values()) // 2
        extra = _application_macs(m) if isinstance(m, PEDConv2d) else 0
        dynamic += extra
        own = sum(p.numel() for p in m.parameters())
        if isinstance(m, PEDConv2d) and m.decoder is not None:
            own -= sum(p.numel() for p in m.decoder.parameters())
        rows.append(dict(name=name, type=type(m).__name__, params=own, macs=counted + extra))
    total = counter.get_total_flops() // 2 + dynamic
    return ModelProfile(params=params_train - decoder_params, params_train=params_train, macs=total,
                        dynamic_macs=dynamic, input_size=tuple(input_size), layers=rows)


def compare_to_paper(names: Sequence[str], input_size: Sequence[int] = (1, 3, 224, 224)) -> list[dict]:
    """Profile registered models and set them beside :data:`PAPER_NUMBERS`."""
    from .models import create_model

    out = []
    for name in names:
        prof = profile_model(create_model(name), input_size)
        paper = PAPER_NUMBERS.get(name, {})
        row = dict(model=name, params=prof.params, params_train=prof.params_train, macs=prof.macs,
                   paper_params=paper.get("params"), paper_macs=paper.get("macs"), source=paper.get("source", ""))
        for k in ("params", "macs"):
            ref = row[f"paper_{k}"]
            row[f"{k}_diff_pct"] = None if ref is None else 100.0 * (row[k] - ref) / ref
        out.append(row)
    return out


def _fmt(v: Optional[float], scale: float, unit: str) -> str:
    return "—" if v is None else f"{v / scale:.2f}{unit}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | params | paper | diff | FLOPs (MACs) | paper | diff | params incl. decoder |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        def d(k: str) -> str:
            return "—" if r[k] is None else f"{r[k]:+.1f}%"
        lines.append(f"| {r['model']} | {_fmt(r['params'], 1e6, 'M')} | {_fmt(r['paper_params'], 1e6, 'M')} | {d('params_diff_pct')} "
                     f"| {_fmt(r['macs'], 1e9, 'G')} | {_fmt(r['paper_macs'], 1e9, 'G')} | {d('macs_diff_pct')} "
                     f"| {_fmt(r['params_train'], 1e6, 'M')} |")
    return "\n".join(lines) + "\n"


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="pedconv profile", description=__doc__)
    p.add_argument("--models", nargs="+", default=list(PAPER_NUMBERS), help="registered model names")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--out", type=Path, default=Path("results/profile"), help="output prefix (.md, .json, .csv)")
    return p


def main(argv: Optional[Sequence[str]] = None, args: Optional[argparse.Namespace] = None) -> list[dict]:
    if args is None:
        args = build_parser().parse_args(argv)
    rows = compare_to_paper(args.models, (1, 3, args.input_size, args.input_size))
    md = markdown_table(rows)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(md)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}.md, .json, .csv")
    return rows
