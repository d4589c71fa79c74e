"""Parameters and FLOPs (multiply-adds, the paper's convention) of any model.

Convolutions, linear layers and the generators' / attentions' matrix products are counted
by ``torch.utils.flop_counter.FlopCounterMode`` (which reports 2 FLOPs per multiply-add; we
halve it). Elementwise work that the counter ignores is added analytically per layer:

* :class:`~pedconv.PEDConv2d`: forming the CP tensor and the Hadamard product of Eq. (2),
  ``2 * R * Cout * Cin/groups * k^2`` per sample (Sec. 3, complexity analysis);
* :class:`~pedconv.SpatialPEDConv2d`: the same per output pixel on the depthwise weight,
  plus the depthwise multiply-adds of its tap loop (``Cout * k^2`` per pixel);
* :class:`~pedconv.layers.ODConv2d`: scaling the weight by its attentions.

Parameters are reported for deployment (info-max decoders excluded: they exist only in
training) and for training.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .layers import CondConv2d, DynamicConv2d, ODConv2d, PEDConv2d, SpatialPEDConv2d

__all__ = ["PAPER_NUMBERS", "ModelProfile", "compare_to_paper", "profile_model"]

# Published params / FLOPs (multiply-adds) by registered model name. "Table n" is the PEDConv
# paper; the ODConv rows are from the ODConv paper (Li et al., ICLR 2022), params only.
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
    "pedconv_resnet18_rank4": {"params": 12.4e6, "macs": 1.9e9, "source": "Table 5b"},
    "pedconv_resnet18_rank8": {"params": 13.0e6, "macs": 2.0e9, "source": "Table 5b"},
    "pedconv_resnet50_gamma": {"params": 27.9e6, "macs": 4.1e9, "source": "Table 5a"},
    "pedconv_resnet50_phi": {"params": 27.4e6, "macs": 4.1e9, "source": "Table 5a"},
    "pedconv_resnet50_psi": {"params": 26.7e6, "macs": 4.1e9, "source": "Table 5a"},
    "pedconv_resnet50_deterministic": {"params": 28.6e6, "macs": 4.2e9, "source": "Table 5a"},
    "pedconv_mobilenetv1_100_pw": {"params": 4.8e6, "macs": 579e6, "source": "Table 5c"},
    "pedconv_mobilenetv1_100_dw": {"params": 4.6e6, "macs": 569e6, "source": "Table 5c"},
    "pedconv_mobilenetv1_100_shallow": {"params": 4.3e6, "macs": 570e6, "source": "Table 5d"},
    "pedconv_mobilenetv1_100_deep": {"params": 5.1e6, "macs": 578e6, "source": "Table 5d"},
    "pedconv_resnet50_sd": {"params": 17.2e6, "macs": 2.3e9, "source": "Table 6"},
    "pedconv_resnet101_sd": {"params": 29.3e6, "macs": 4.1e9, "source": "Table 6"},
    "condconv_resnet50": {"params": 104.8e6, "macs": 4.2e9, "source": "Table 1b (CondConv, K=8)"},
    "condconv_mobilenet_v2": {"params": 27.5e6, "macs": 329e6, "source": "Table 1a (CondConv, K=8)"},
    "dyconv_resnet18": {"params": 42.7e6, "macs": 1.85e9, "source": "Table 1b (DY-Conv, K=4)"},
    "dyconv_mobilenet_v2": {"params": 11.1e6, "macs": 313e6, "source": "Table 1a (DY-Conv, K=4)"},
    "odconv_resnet18": {"params": 11.94e6, "source": "ODConv paper (1 kernel)"},
    "odconv4x_resnet18": {"params": 44.90e6, "source": "ODConv paper (4 kernels)"},
    "odconv_resnet50": {"params": 28.64e6, "source": "ODConv paper (1 kernel)"},
    "odconv4x_resnet50": {"params": 90.67e6, "source": "ODConv paper (4 kernels)"},
}
"""The rows :func:`compare_to_paper` checks; ``pedconv profile`` prints them all."""


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


def _dynamic_layer_macs(layer: nn.Module, out_shape: Sequence[int], counted: Callable[[str], int]) -> int:
    """Multiply-adds of a PEDConv / ODConv layer by the paper's convention.

    The generator (attention) branch is what ``FlopCounterMode`` measured on those
    submodules; the convolution and the weight application are analytic, because the
    counter would otherwise also count how a given execution strategy happens to arrange
    the work (e.g. the batch-one path forms the per-sample weight with a matmul).
    """
    batch = out_shape[0] if len(out_shape) == 4 else 1
    pixels = batch * out_shape[-2] * out_shape[-1]
    kh, kw = layer.kernel_size  # type: ignore[misc]
    n = layer.out_channels * (layer.in_channels // layer.groups) * kh * kw  # type: ignore[operator]
    if isinstance(layer, SpatialPEDConv2d):
        taps = layer.out_channels * kh * kw * pixels
        # per pixel: form the rank-R depthwise weight (2R per entry) and apply it (1 per entry)
        return counted("generator") + 2 * layer.rank * taps + taps
    if isinstance(layer, PEDConv2d):
        # Sec. 3: static conv + 2 * Cout * Cin * k^2 per rank for forming and applying A(x)
        return counted("generator") + pixels * n + batch * 2 * layer.rank * n
    assert isinstance(layer, ODConv2d)
    attention = sum(counted(c) for c in ("fc", "channel_fc", "filter_fc", "spatial_fc", "kernel_fc"))
    k = layer.num_kernels
    # aggregation over K kernels (K * n) and the tap scaling (n); K = 1 scales by all three
    return attention + pixels * n + batch * ((k + 1) * n if k > 1 else 2 * n)


def _static_conv_macs(layer: nn.Module, out_shape: Sequence[int]) -> int:
    """Multiply-adds of a static ``nn.Conv2d`` with ``layer``'s geometry (a spatial layer's
    static counterpart is its depthwise base conv)."""
    conv = layer.conv if isinstance(layer, CondConv2d) else layer  # timm's conv holds the geometry
    kh, kw = conv.kernel_size  # type: ignore[misc]
    pixels = (out_shape[0] if len(out_shape) == 4 else 1) * out_shape[-2] * out_shape[-1]
    return pixels * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw  # type: ignore[operator]


_DYNAMIC = (PEDConv2d, ODConv2d, CondConv2d, DynamicConv2d)
_RECOUNTED = (PEDConv2d, ODConv2d)


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
    shapes: dict[nn.Module, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _, out: shapes.__setitem__(mod, tuple(out.shape)))
        for m in model.modules() if isinstance(m, _DYNAMIC)
    ]
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    per_module = counter.get_flop_counts()

    def counted(key: str) -> int:
        return sum(per_module.get(key, {}).values()) // 2

    decoder_params = sum(
        p.numel() for m in model.modules() if isinstance(m, PEDConv2d) and m.decoder is not None for p in m.decoder.parameters()
    )
    params_train = sum(p.numel() for p in model.parameters())
    rows, dynamic = [], 0
    total = counter.get_total_flops() // 2
    root = type(model).__name__
    # Rows: plain convs / linears, and dynamic layers as a whole (their insides are summed).
    inside_dynamic = {id(sub) for m in model.modules() if isinstance(m, _DYNAMIC) for sub in m.modules() if sub is not m}
    for name, m in model.named_modules():
        if id(m) in inside_dynamic or not isinstance(m, (nn.Conv2d, nn.Linear, *_DYNAMIC)):
            continue
        key = f"{root}.{name}" if name else root
        macs = counted(key)
        if isinstance(m, _RECOUNTED) and m in shapes:
            recount = _dynamic_layer_macs(m, shapes[m], lambda child, key=key: counted(f"{key}.{child}"))
            total += recount - macs
            macs = recount
        if m in shapes:  # overhead over a static conv of the same shape
            dynamic += macs - _static_conv_macs(m, shapes[m])
        own = sum(p.numel() for p in m.parameters())
        if isinstance(m, PEDConv2d) and m.decoder is not None:
            own -= sum(p.numel() for p in m.decoder.parameters())
        rows.append(dict(name=name, type=type(m).__name__, params=own, macs=macs))
    return ModelProfile(params=params_train - decoder_params, params_train=params_train, macs=total,
                        dynamic_macs=dynamic, input_size=tuple(input_size), layers=rows)


def compare_to_paper(
    names: Sequence[str], input_size: Sequence[int] = (1, 3, 224, 224), layers: Optional[list[dict]] = None
) -> list[dict]:
    """Profile registered models and set them beside :data:`PAPER_NUMBERS`.

    Args:
        names: registered model names.
        input_size: the profiled input shape.
        layers: if given, every model's per-layer rows are appended to it (with ``model``).
    """
    from .models import create_model

    out = []
    for name in names:
        prof = profile_model(create_model(name), input_size)
        if layers is not None:
            layers.extend({"model": name, **r} for r in prof.layers)
        paper = PAPER_NUMBERS.get(name, {})
        row = dict(model=name, params=prof.params, params_train=prof.params_train, macs=prof.macs,
                   dynamic_macs=prof.dynamic_macs, paper_params=paper.get("params"),
                   paper_macs=paper.get("macs"), source=paper.get("source", ""))
        for k in ("params", "macs"):
            ref = row[f"paper_{k}"]
            row[f"{k}_diff_pct"] = None if ref is None else 100.0 * (row[k] - ref) / ref
        out.append(row)
    return out


def _fmt(v: Optional[float], scale: float, unit: str) -> str:
    return "—" if v is None else f"{v / scale:.2f}{unit}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | paper row | params | paper | diff | FLOPs (MACs) | paper | diff | dynamic overhead | params incl. decoder |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        def d(k: str) -> str:
            return "—" if r[k] is None else f"{r[k]:+.1f}%"
        lines.append(f"| {r['model']} | {r['source']} | {_fmt(r['params'], 1e6, 'M')} | {_fmt(r['paper_params'], 1e6, 'M')} | {d('params_diff_pct')} "
                     f"| {_fmt(r['macs'], 1e9, 'G')} | {_fmt(r['paper_macs'], 1e9, 'G')} | {d('macs_diff_pct')} "
                     f"| {_fmt(r['dynamic_macs'], 1e6, 'M')} "
                     f"| {_fmt(r['params_train'], 1e6, 'M')} |")
    return "\n".join(lines) + "\n"


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="pedconv profile", description=__doc__)
    p.add_argument("--models", nargs="+", default=list(PAPER_NUMBERS), help="registered model names (default: every row of PAPER_NUMBERS)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--out", type=Path, default=Path("results/profile"), help="output prefix (.md, .json, .csv)")
    p.add_argument("--layers", action="store_true", help="also write every layer's params/MACs to <out>.layers.csv")
    return p


def main(argv: Optional[Sequence[str]] = None, args: Optional[argparse.Namespace] = None) -> list[dict]:
    if args is None:
        args = build_parser().parse_args(argv)
    layer_rows: Optional[list[dict]] = [] if args.layers else None
    rows = compare_to_paper(args.models, (1, 3, args.input_size, args.input_size), layer_rows)
    md = markdown_table(rows)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(md)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    written = f"{args.out}.md, .json, .csv"
    if layer_rows:
        path = args.out.with_suffix(".layers.csv")
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(layer_rows[0]))
            writer.writeheader()
            writer.writerows(layer_rows)
        written += f", {path}"
    print(f"wrote {written}")
    return rows
