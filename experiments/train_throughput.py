"""Training throughput of the small comparison models (what sized `pedconv compare`'s presets).

One SGD step = forward, cross-entropy (+ lambda * info-max), backward, update, at batch 128 on
28x28 single-channel inputs, for the static / PEDConv / CondConv / DY-Conv / ODConv CIFAR-style
ResNet-20 at two widths. Prints images/s; run it on an otherwise idle machine.

    python experiments/train_throughput.py [--threads 2] [--steps 6]
"""

import argparse
import time

import torch
import torch.nn.functional as F

import pedconv

MODELS = ["cifar_resnet20", "pedconv_cifar_resnet20", "condconv_cifar_resnet20", "dyconv_cifar_resnet20",
          "odconv_cifar_resnet20"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 8])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    for width in args.widths:
        for name in MODELS:
            torch.manual_seed(0)
            model = pedconv.create_model(name, num_classes=10, in_chans=1, width=width).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

            def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y) + pedconv.INFOMAX_WEIGHT * pedconv.infomax_loss(model)
                loss.backward()
                opt.step()

            for _ in range(2):  # warm-up
                step()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            rate = 128 * args.steps / (time.perf_counter() - t)
            print(f"width {width:3d}  {name:26s} {rate:7.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
