"""How should a PEDConv layer start? A measured comparison of initialisations.

Trains a CIFAR-style ResNet-20 (16/32/64) on a subset of real Fashion-MNIST with a fixed
recipe, statically and with PEDConv under four parameterisations:

* ``static``          - plain nn.Conv2d;
* ``scaled_sigmoid``  - pedconv's default: 2*sigmoid, zero heads, components start at 1, W_base = W;
* ``sigmoid_fold8``   - the authors' sigmoid made function-preserving by W_base = 8 W;
* ``sigmoid_nofold``  - the authors' from-scratch setting: sigmoid, W_base = W (starts at W/8).

Usage::

    python experiments/init_study.py                # 10k images, 4 epochs, seeds 0 1
    python experiments/init_study.py --quick        # a smoke run (< 2 min)

Writes ``results/init_study.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import pedconv
from pedconv.models import cifar_resnet
from pedconv.tasks.classification.readers import load_fashion_mnist

VARIANTS = {
    "static": None,
    "scaled_sigmoid": dict(activation="scaled_sigmoid"),
    "sigmoid_fold8": dict(activation="sigmoid", preserve_function=True),
    "sigmoid_nofold": dict(activation="sigmoid", preserve_function=False),
}
MEAN, STD = 0.2860, 0.3530


def build(variant: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = cifar_resnet(depth=20, width=16, in_chans=1, num_classes=10)
    options = VARIANTS[variant]
    if options is not None:
        model = pedconv.convert(model, keep_shortcut=True, **options)
    return model


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return 100.0 * correct / len(x)


def run(variant: str, seed: int, args: argparse.Namespace, data) -> dict:
    xtr, ytr, xte, yte = data
    model = build(variant, seed)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = len(xtr) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps_per_epoch * args.epochs)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch_size : (s + 1) * args.batch_size]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            loss = loss + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    train_s = time.perf_counter() - start
    acc = evaluate(model, xte, yte)
    print(f"{variant:>15} seed {seed}: top-1 {acc:.2f}%  ({train_s:.0f} s)", flush=True)
    return dict(variant=variant, seed=seed, top1=acc, train_seconds=train_s)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--test-size", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="1000 images, 1 epoch, 1 seed")
    p.add_argument("--out", type=Path, default=Path("results/init_study.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.test_size, args.epochs, args.seeds = 1000, 2000, 1, [0]
    torch.set_num_threads(args.threads)

    xtr, ytr = load_fashion_mnist(train=True)
    xte, yte = load_fashion_mnist(train=False)
    sub = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(1234))[: args.train_size]
    norm = lambda t: ((t.float() / 255 - MEAN) / STD).unsqueeze(1)
    data = (norm(xtr[sub]), ytr[sub], norm(xte[: args.test_size]), yte[: args.test_size])
    print(f"Fashion-MNIST: {len(data[0])} train / {len(data[2])} test images, {args.epochs} epochs, seeds {args.seeds}")

    results = [run(v, s, args, data) for v in args.variants for s in args.seeds]
    print("\n| variant | top-1 per seed (%) | mean |\n| --- | --- | --- |")
    for v in args.variants:
        accs = [r["top1"] for r in results if r["variant"] == v]
        print(f"| {v} | {' / '.join(f'{a:.1f}' for a in accs)} | {sum(accs) / len(accs):.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(vars(args), out=str(args.out), machine=platform.processor() or platform.machine(),
                torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    args.out.write_text(json.dumps(dict(config=meta, results=results), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
