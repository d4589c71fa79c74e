"""Regional compilation: is compiling only the PEDConv layers (generator, sampling, decoder,
weight composition and elementwise glue; the rest of the network eager) a net win?

Compares, interleaved, the eager static CIFAR-style ResNet-20, the eager PEDConv one and the
PEDConv one with every PEDConv2d compiled (``layer.compile(dynamic=False)``), train step and
eval at batch 128 on 1x28x28; prints the throughput ratios to static and the time of the
first calls (where compilation happens).

    python experiments/regional_compile.py [--widths 8 16] [--reps 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import pedconv


def _model(name: str, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return pedconv.create_model(name, num_classes=10, in_chans=1, width=width)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, target = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    for width in args.widths:
        models = {"static": _model("cifar_resnet20", width), "pedconv": _model("pedconv_cifar_resnet20", width)}
        regional = _model("pedconv_cifar_resnet20", width)
        for m in regional.modules():
            if isinstance(m, pedconv.PEDConv2d):
                m.compile(dynamic=False)
        models["regional"] = regional
        opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}

        def train(k: str, models: dict = models, opts: dict = opts) -> None:
            m, opt = models[k], opts[k]
            m.train()
            opt.zero_grad()
            (F.cross_entropy(m(x), target) + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(m)).backward()
            opt.step()

        def evaluate(k: str, models: dict = models) -> None:
            m = models[k].eval()
            with torch.no_grad():
                m(x)

        for mode, step in (("train", train), ("eval", evaluate)):
            first = {}
            for k in models:
                t0 = time.perf_counter()
                step(k)
                step(k)
                first[k] = time.perf_counter() - t0
            times: dict[str, list[float]] = {k: [] for k in models}
            for _ in range(args.reps):
                for k in models:
                    t0 = time.perf_counter()
                    step(k)
                    times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"width {width} {mode}: static {1e3 * med['static']:.0f} ms/step; throughput / static: "
                  + ", ".join(f"{k} {med['static'] / med[k]:.2f}x" for k in models if k != "static")
                  + f"; first two calls (compilation): regional {first['regional']:.1f} s, "
                  f"eager {first['pedconv']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
