"""ℓ∞ PGD attack and robust accuracy (the evaluation of Table 4 of the PEDConv paper).

PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
https://arxiv.org/abs/1706.06083. The paper evaluates its Free-adversarially-trained models
against PGD-10 and PGD-50 with ℓ∞ ε = 4/255 (:data:`PAPER_EPS`).

Attacks run in *pixel space*: the image in [0, 1], ε in pixel units. The dataset's
normalisation is therefore part of the attacked function (:class:`NormalizedModel`), never
of the input the attack perturbs.

Written here rather than taken from torchattacks, which pins an old ``requests``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from ...errors import UsageError
from ...training.data import mix_seed
from ...training.distributed import DistEnv, all_reduce_sum
from ...training.recipe import autocast

__all__ = ["PAPER_EPS", "NormalizedModel", "default_alpha", "parse_eps", "pgd_attack", "robust_accuracy"]

PAPER_EPS = 4 / 255
"""The paper's ℓ∞ budget (Table 4), in pixel units."""


def parse_eps(text: str, option: Optional[str] = "--eps") -> float:
    """An ℓ∞ budget in pixel units from ``"0.0157"`` or a fraction ``"4/255"``.

    Raises:
        UsageError: (a ValueError) naming ``option``: not a number or fraction, negative, a
            zero denominator, not finite, or above 1 (a budget in 0-255 units: ``4`` for ``4/255``).

    >>> parse_eps("4/255") == 4 / 255, parse_eps("0.5"), parse_eps(" 0 ")
    (True, 0.5, 0.0)
    >>> parse_eps("4/0")
    Traceback (most recent call last):
    ...
    pedconv.errors.UsageError: --eps: zero denominator in '4/0'
    """
    def error(message: str) -> UsageError:
        return UsageError(f"{option}: {message}" if option else message)

    s = text.strip()
    try:
        if "/" in s:
            num, den = (float(part) for part in s.split("/", 1))
            if den == 0:
                raise error(f"zero denominator in {text!r}")
            value = num / den
        else:
            value = float(s)
    except UsageError:
        raise
    except ValueError:
        raise error(f"expected a number or a fraction such as 4/255, got {text!r}") from None
    if not math.isfinite(value):
        raise error(f"must be finite, got {text!r}")
    if value < 0:
        raise error(f"must be >= 0, got {text!r}")
    if value > 1:
        raise error(f"{text!r} exceeds 1: the budget is in pixel units of [0, 1] (4/255, not 4)")
    return value


class NormalizedModel(nn.Module):
    """A classifier with the dataset normalisation inside: it takes images in [0, 1].

    Args:
        model: the classifier on normalised inputs (the bare module, not DDP, for attacks).
        mean, std: per-channel statistics in [0, 1] units (the :class:`~pedconv.training.data.DataSpec`'s).
        out_chans: replicate a 1-channel image to this many channels after normalising
            (models without ``in_chans``), as :class:`~pedconv.training.data.BatchPreprocessor` does.

    >>> net = NormalizedModel(nn.Identity(), (0.5,), (0.25,))
    >>> net(torch.tensor([[[[0.0, 1.0]]]])).flatten().tolist()
    [-2.0, 2.0]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 out_chans: Optional[int] = None) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one entry per channel and std > 0, got {mean} and {std}")
        self.model = model
        self.out_chans = out_chans
        # Non-persistent: the wrapped model's state dict stays the checkpoint's.
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``model((x - mean) / std)`` for pixel images ``x`` in [0, 1]."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.out_chans is not None and x.shape[1] != self.out_chans:
            x = x.expand(-1, self.out_chans, -1, -1)
        return self.model(x)


def default_alpha(eps: float) -> float:
    """PGD step size when none is given: ``eps / 4``.

    That is 1/255 at ε = 4/255, the step of the Free adversarial training evaluation, and for
    10 steps it equals Madry et al.'s ``2.5 * eps / steps`` (the iterate can cross the ball
    2.5 times). It does not depend on the number of steps, so PGD-50 repeats PGD-10's first
    ten iterates from the same start and can only find more adversarial examples.

    >>> default_alpha(4 / 255) * 255
    1.0
    """
    return eps / 4


def _check_bare(model: nn.Module) -> None:
    if isinstance(model, DistributedDataParallel) or isinstance(getattr(model, "model", None),
                                                                  DistributedDataParallel):
        raise ValueError("pgd_attack takes the bare module (ddp.module), not the DDP wrapper: each attack step "
                         "is a forward and backward that must not all-reduce gradients or wait for other ranks")


def pgd_attack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: Optional[float] = None, steps: int,
               random_start: bool = True, generator: Optional[torch.Generator] = None) -> Tensor:
    """ℓ∞ projected gradient descent on the cross-entropy (Madry et al. 2018), in pixel space.

    From ``x`` (plus a uniform random start in the ε-ball), ``steps`` times: ascend the sign
    of the input gradient by ``alpha``, project onto the ε-ball around ``x`` and onto [0, 1].
    A sample keeps the first iterate that ``model`` misclassifies (the attack succeeded;
    further steps could only undo that); the others end at the last iterate.

    The model runs in eval mode (restored afterwards); the gradient is taken with
    :func:`torch.autograd.grad` with respect to the input only, so no parameter ``.grad``
    is touched. Pass the bare module, not a DDP wrapper (refused): an attack step must not
    all-reduce anything. Works inside :func:`torch.autocast` (the loss is computed in float32).

    Args:
        model: pixel-space classifier (e.g. :class:`NormalizedModel`).
        x: images in [0, 1], ``(B, C, H, W)``; y: labels ``(B,)``.
        eps: ℓ∞ budget in pixel units. alpha: step size (default :func:`default_alpha`).
        steps: iterations (PGD-10: 10). random_start: start uniformly in the ball (else at ``x``).
        generator: draws the random start (its device is used; default: torch's global one).

    Returns:
        the adversarial images, detached, ``|x_adv - x| <= eps`` and in [0, 1].

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x = torch.rand(3, 1, 2, 2)
    >>> x_adv = pgd_attack(net, x, torch.tensor([0, 1, 0]), eps=0.1, steps=3)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), bool(x_adv.min() >= 0 and x_adv.max() <= 1)
    (True, True)
    """
    _check_bare(model)
    if eps < 0 or steps < 0:
        raise ValueError(f"eps and steps must be >= 0, got eps={eps}, steps={steps}")
    alpha = default_alpha(eps) if alpha is None else alpha
    was_training = model.training
    model.eval()
    x = x.detach()
    try:
        if random_start and eps > 0:
            device = generator.device if generator is not None else x.device
            noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
            x_cur = (x + (2 * noise - 1) * eps).clamp_(0, 1)
        else:
            x_cur = x.clone()
        best = x_cur.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(steps):
            x_cur.requires_grad_(True)
            logits = model(x_cur).float()
            loss = F.cross_entropy(logits, y, reduction="sum")  # sum: the sign is per sample anyway
            (grad,) = torch.autograd.grad(loss, [x_cur])
            with torch.no_grad():
                fooled = (logits.argmax(1) != y) & ~done
                best[fooled] = x_cur[fooled].detach()
                done |= fooled
                x_cur = x_cur.detach() + alpha * torch.nan_to_num(grad).sign()
                x_cur = torch.min(torch.max(x_cur, x - eps), x + eps).clamp_(0, 1)
        with torch.no_grad():
            best[~done] = x_cur[~done]
    finally:
        model.train(was_training)
    return best.detach()


def robust_accuracy(model: nn.Module, loader: Iterable, preprocess_to_pixels: Callable[[Tensor], Tensor], *,
                    eps: float, steps_list: Sequence[int] = (10, 50), alpha: Optional[float] = None,
                    env: Optional[DistEnv] = None, seed: int = 0, amp: bool = False,
                    amp_dtype: Optional[torch.dtype] = None) -> dict[str, float]:
    """Natural and PGD top-1 (%) of ``model`` over every rank's shard of ``loader``.

    Each batch ``(uint8 images, labels)`` goes through ``preprocess_to_pixels`` (to [0, 1],
    resized if need be; no normalisation: that is the model's, see :class:`NormalizedModel`),
    then is attacked by :func:`pgd_attack` with each number of steps. Every attack on a batch
    starts from the same random point (a generator seeded by ``(seed, rank, batch)``), so
    more steps never give a higher accuracy. The counts are summed over the ranks with one
    reduction at the end.

    Returns:
        ``natural`` and ``pgd{steps}`` for each of ``steps_list`` (percent), ``images`` and
        ``eval_images_per_s``.

    >>> from pedconv.training.data import TensorImageDataset, collate_batch
    >>> ds = TensorImageDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_batch)
    >>> net = NormalizedModel(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), (0.5,), (0.5,))
    >>> m = robust_accuracy(net, loader, lambda u: u.float() / 255, eps=0.0, steps_list=(2,))
    >>> m["images"], m["natural"] == m["pgd2"]
    (8.0, True)
    """
    _check_bare(model)
    env = env or DistEnv()
    device = env.device
    counts = torch.zeros(1 + len(steps_list), dtype=torch.float64, device=device)
    n = 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        x = preprocess_to_pixels(images.to(device, non_blocking=True))
        y = labels.to(device, non_blocking=True)
        with autocast(device, amp, amp_dtype):
            with torch.no_grad():
                counts[0] += (model(x).argmax(1) == y).sum()
            for j, steps in enumerate(steps_list):
                g = torch.Generator(device=device).manual_seed(mix_seed(seed, env.rank, i))
                x_adv = pgd_attack(model, x, y, eps=eps, alpha=alpha, steps=steps, generator=g)
                with torch.no_grad():
                    counts[1 + j] += (model(x_adv).argmax(1) == y).sum()
        n += len(y)
    model.train(was_training)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    *correct, total, total_s = all_reduce_sum([*counts.tolist(), float(n), seconds], env)
    denom = max(total, 1.0)
    out = {"natural": 100.0 * correct[0] / denom}
    out.update({f"pgd{s}": 100.0 * c / denom for s, c in zip(steps_list, correct[1:])})
    out.update(images=total, eval_images_per_s=total / max(total_s / env.world_size, 1e-9))
    return out

