"""The stock-op floor of every benchmark layer shape: how fast can *any* exact per-sample
convolution built from stock PyTorch ops run here, and how close does pedconv's ``auto`` get?

For each distinct conv shape of ResNet-50 and MobileNetV2 at 224x224 (as in ``pedconv bench``)
and of the CIFAR-style ResNet-20 at widths 8 and 16 (batch 128, 28x28), it times, interleaved
with the static ``nn.Conv2d`` and as a ratio to it, exact rank-1 per-sample convolutions with
all three components (gamma, phi, psi; given as inputs, so the generator is not timed):

* ``grouped``     the per-sample weight ``W * (gamma (x) phi (x) psi)``, batch folded into groups (NCHW)
* ``grouped_cl``  the same on channels_last memory
* ``columns``     im2col (``F.unfold``) scaled by ``phi (x) psi``, one GEMM with the shared weight, ``* gamma``
* ``bmm``         im2col, then a batched GEMM with each sample's weight
* ``taps``        (stride 1, ungrouped) one 1x1 conv with the shared weight for every tap, a weighted shifted sum
* ``pedconv``     ``pedconv_conv2d(..., strategy="auto")``, the contestant

``floor`` is the fastest stock form; the table reports ``pedconv / floor`` per mode (train =
forward + backward with gradients for x, W and the components; eval = forward, no grad).

    python experiments/floor_probe.py [--archs resnet50 mobilenet_v2 cifar] [--reps 3] [--out results/floor]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import pedconv
from pedconv.tools.benchmark import ConvShape, conv_shapes, time_interleaved
from pedconv.utils.atomic import atomic_write_text
from pedconv.utils.reporting import machine_description, markdown_table

Form = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, ConvShape], torch.Tensor]


def _weight(w, g, p, s):
    b = g.shape[0]
    return w.unsqueeze(0) * (g[:, :, None, None] * p[:, None, :, None] * s[:, None, None, :]).view(b, *w.shape)


def grouped(x, w, g, p, s, sh, channels_last=False):
    b, cin, h, wd = x.shape
    wb = _weight(w, g, p, s).reshape(b * sh.cout, *w.shape[1:])
    xx = x.reshape(1, b * cin, h, wd)
    if channels_last:
        xx, wb = xx.contiguous(memory_format=torch.channels_last), wb.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(xx, wb, None, sh.stride, sh.padding, 1, b * sh.groups)
    return y.reshape(b, sh.cout, *y.shape[-2:])


def columns(x, w, g, p, s, sh):
    b = x.shape[0]
    k, cg, G = sh.kernel, sh.cin // sh.groups, sh.groups
    cols = F.unfold(x, k, padding=sh.padding, stride=sh.stride).view(b, G, cg, k * k, -1)
    cols = cols * (p[:, None, :, None, None] * s[:, None, None, :, None])
    y = torch.matmul(w.view(G, sh.cout // G, cg * k * k), cols.view(b, G, cg * k * k, -1))
    ho = (x.shape[-2] + 2 * sh.padding - k) // sh.stride + 1
    return y.reshape(b, sh.cout, ho, -1) * g[:, :, None, None]


def bmm(x, w, g, p, s, sh):
    b, k, G = x.shape[0], sh.kernel, sh.groups
    cg = sh.cin // G
    cols = F.unfold(x, k, padding=sh.padding, stride=sh.stride).view(b * G, cg * k * k, -1)
    wb = _weight(w, g, p, s).view(b * G, sh.cout // G, cg * k * k)
    ho = (x.shape[-2] + 2 * sh.padding - k) // sh.stride + 1
    return torch.bmm(wb, cols).view(b, sh.cout, ho, -1)


def taps(x, w, g, p, s, sh):
    b, k = x.shape[0], sh.kernel
    z = F.conv2d(x * p[:, :, None, None], w.permute(2, 3, 0, 1).reshape(k * k * sh.cout, sh.cin, 1, 1))
    z = F.pad(z, [sh.padding] * 4).view(b, k * k, sh.cout, *(n + 2 * sh.padding for n in x.shape[-2:]))
    h, wd = x.shape[-2:]
    out = sum(z[:, i * k + j, :, i : i + h, j : j + wd] * s[:, i * k + j, None, None, None]
              for i in range(k) for j in range(k))
    return out * g[:, :, None, None]


def pedconv_auto(x, w, g, p, s, sh):
    return pedconv.pedconv_conv2d(x, w, None, g[:, None], p[:, None], s[:, None], sh.stride, sh.padding, 1, sh.groups)


def forms(sh: ConvShape) -> dict[str, Form]:
    out: dict[str, Form] = {"grouped": grouped, "grouped_cl": lambda *a: grouped(*a, channels_last=True)}
    if sh.groups < sh.cin:  # im2col forms for all but depthwise layers
        out.update(columns=columns, bmm=bmm)
    if sh.kernel > 1 and sh.stride == 1 and sh.groups == 1:
        out["taps"] = taps
    out["pedconv"] = pedconv_auto
    return out


def probe(sh: ConvShape, batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, sh.cin, sh.height, sh.width)
    w = torch.randn(sh.cout, sh.cin // sh.groups, sh.kernel, sh.kernel) * 0.1
    comps = [torch.rand(batch, n) + 0.5 for n in (sh.cout, sh.cin // sh.groups, sh.kernel**2)]
    row: dict = dict(shape=sh.label(), kind=sh.kind, batch=batch)
    for mode in ("train", "eval"):
        leaves = [t.clone().requires_grad_(mode == "train") for t in (x, w, *comps)]
        fns: dict[str, Callable[[], object]] = {}

        def static(lv=leaves, train=mode == "train") -> object:
            y = F.conv2d(lv[0], lv[1], None, sh.stride, sh.padding, 1, sh.groups)
            return torch.autograd.grad(y.sum(), lv[:2]) if train else y

        fns["static"] = static
        for name, fn in forms(sh).items():
            def run(fn=fn, lv=leaves, train=mode == "train") -> object:
                if not train:
                    with torch.no_grad():
                        return fn(*lv, sh)
                return torch.autograd.grad(fn(*lv, sh).sum(), lv)

            fns[name] = run
        if mode == "train" and sh.kernel > 1 and sh.height * sh.width * batch * sh.cin * 9 > 2e8:
            fns.pop("columns", None)  # im2col beyond ~1 GB: not a floor, and slow to time
            fns.pop("bmm", None)
        times = time_interleaved(fns, reps)
        ratios = {k: v / times["static"] for k, v in times.items()}
        stock = {k: v for k, v in ratios.items() if k not in ("static", "pedconv")}
        floor = min(stock, key=stock.get)  # type: ignore[arg-type]
        row[mode] = dict(ratios=ratios, floor=floor, floor_ratio=stock[floor],
                         pedconv_over_floor=ratios["pedconv"] / stock[floor])
    return row


def cifar_shapes(width: int) -> list[ConvShape]:
    w = width
    return [ConvShape(w, w, 3, 1, 1, 1, 28, 28), ConvShape(w, 2 * w, 3, 2, 1, 1, 28, 28),
            ConvShape(2 * w, 2 * w, 3, 1, 1, 1, 14, 14), ConvShape(2 * w, 4 * w, 3, 2, 1, 1, 14, 14),
            ConvShape(4 * w, 4 * w, 3, 1, 1, 1, 7, 7)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["resnet50", "mobilenet_v2", "cifar"])
    ap.add_argument("--batch", type=int, default=32, help="batch of the torchvision shapes (CIFAR shapes: 128)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/floor")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started, rows = time.time(), []
    for arch in args.archs:
        shapes = ([(s, 128) for w in (8, 16) for s in cifar_shapes(w)] if arch == "cifar"
                  else [(s, args.batch) for s in conv_shapes(arch)])
        for sh, batch in shapes:
            row = dict(arch=arch, **probe(sh, batch, args.reps))
            rows.append(row)
            print(f"{arch:>12} {row['shape']:>28} " + "  ".join(
                f"{m}: pedconv {row[m]['ratios']['pedconv']:.2f}x floor {row[m]['floor_ratio']:.2f}x "
                f"({row[m]['floor']}) -> {row[m]['pedconv_over_floor']:.2f}" for m in ("train", "eval")), flush=True)
    within = {m: sum(r[m]["pedconv_over_floor"] <= 1.10 for r in rows) for m in ("train", "eval")}
    meta = dict(machine=machine_description(), threads=args.threads, torch=torch.__version__,
                date=time.strftime("%Y-%m-%d"), reps=args.reps, seconds=round(time.time() - started),
                within_10_percent=within, shapes=len(rows))
    table = markdown_table(
        ["net", "shape", "kind", "B", "train: pedconv / floor (floor form)", "eval: pedconv / floor (floor form)"],
        [[r["arch"], r["shape"], r["kind"], r["batch"],
          *(f"{r[m]['pedconv_over_floor']:.2f} ({r[m]['floor']} {r[m]['floor_ratio']:.2f}x static)"
            for m in ("train", "eval"))] for r in rows])
    summary = "  ".join(f"{m}: {within[m]}/{len(rows)} within 10% of the floor, median "
                        f"{statistics.median(r[m]['pedconv_over_floor'] for r in rows):.2f}" for m in ("train", "eval"))
    md = f"{meta['machine']}, torch {meta['torch']}, {args.threads} threads, {meta['date']}\n\n{summary}\n\n{table}"
    atomic_write_text(f"{args.out}.json", json.dumps(dict(meta=meta, rows=rows), indent=1))
    atomic_write_text(f"{args.out}.md", md)
    print(summary)


if __name__ == "__main__":
    main()
