"""Free adversarial training: one persistent perturbation, updated by every replayed minibatch.

Shafahi et al., "Adversarial Training for Free!", NeurIPS 2019, https://arxiv.org/abs/1904.12843;
the PEDConv paper trains its Table 4 models with it (m = 4, ε = 4/255).

Each minibatch is replayed ``m`` times in a row (the task's ``replay``; the optimizer steps on
every replay). The backward pass of a replay gives the parameter gradient *and* the input
gradient at once; the latter updates the perturbation δ by an FGSM step,
``δ ← clip(δ + ε·sign(∇ₓL), -ε, ε)``, which the next replay (and the next minibatch: δ is
never reset while the batch shape stays the same) starts from. The perturbation lives in
pixel space: the model sees ``normalise(clamp(x + δ, 0, 1))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...training.data import BatchPreprocessor
from ...training.recipe import autocast
from ...training.task import StepResult
from .attacks import PAPER_EPS

__all__ = ["FreeAdversarialStep"]


class FreeAdversarialStep:
    """The :class:`~pedconv.training.task.TrainStep` of Free adversarial training.

    Args:
        mean, std: the dataset's per-channel statistics (applied after the perturbation).
        eps: ℓ∞ budget and FGSM step, in pixel units (the paper's 4/255).
        augment: the classification task's seeded crop + flip, applied to the clean pixel
            image before the perturbation (the in-memory datasets).
        size: resize batches to ``(H, W)`` (``--img-size`` on an in-memory dataset).
        out_chans: replicate a 1-channel image to this many channels after normalising
            (models without ``in_chans``). The perturbation stays in the data's channels.
        device: move batches there (the loader's come on the CPU); None: leave them where they are.
        amp, amp_dtype: forward under autocast.

    A call takes a training batch ``(uint8 images (B, C, H, W), labels)``; the loop then
    backpropagates the loss (plus the info-max term) and calls :meth:`after_backward`, which
    updates δ from the input's gradient. δ is ``(B, C, H, W)`` (on the batch's device) and is
    reset to zeros when the batch shape changes (e.g. a smaller last batch).

    >>> step = FreeAdversarialStep((0.5,), (0.5,), eps=0.25)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> batch = (torch.randint(0, 256, (3, 1, 2, 2), dtype=torch.uint8), torch.tensor([0, 1, 0]))
    >>> r = step(net, batch, seed=0); r.loss.backward(); step.after_backward()
    >>> r.count, sorted(set(step.delta.abs().flatten().tolist())) == [0.25]
    (3, True)
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, eps: float = PAPER_EPS,
                 augment: bool = False, size: Optional[tuple[int, int]] = None, out_chans: Optional[int] = None,
                 device: Optional[torch.device] = None, amp: bool = False,
                 amp_dtype: Optional[torch.dtype] = None) -> None:
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps, self.out_chans, self.device = float(eps), out_chans, device
        self.amp, self.amp_dtype = amp, amp_dtype
        chans = len(mean)
        # Augment the image in [0, 1] (mean 0, std 1: the crop pads with black = 0), then perturb,
        # then normalise: the order of the pipeline that Free AT's own code uses.
        self.to_pixels = BatchPreprocessor((0.0,) * chans, (1.0,) * chans, augment=augment, size=size)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.delta: Optional[Tensor] = None
        self._x_adv: Optional[Tensor] = None

    def __call__(self, model: nn.Module, batch: Any, seed: int) -> StepResult:
        """Forward ``model`` on the perturbed batch; returns the mean cross-entropy, count and correct."""
        images, labels = batch
        if self.device is not None:
            images = images.to(self.device, non_blocking=True)
        x = self.to_pixels(images, seed)
        y = labels.to(x.device, non_blocking=True)
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = torch.zeros_like(x)
        elif self.delta.device != x.device or self.delta.dtype != x.dtype:
            self.delta = self.delta.to(x)  # restored from a checkpoint (kept on the CPU)
        x_adv = (x + self.delta).clamp_(0, 1).requires_grad_(True)
        self._x_adv = x_adv
        z = (x_adv - self.mean.to(x.device)) / self.std.to(x.device)
        if self.out_chans is not None and z.shape[1] != self.out_chans:
            z = z.expand(-1, self.out_chans, -1, -1)
        with autocast(x.device, self.amp, self.amp_dtype):
            out = model(z)
            loss = F.cross_entropy(out.float(), y)
        correct = (out.detach().argmax(1) == y).sum()
        # top-1 on the perturbed batch, as a sum of per-image percentages (train_top1 in metrics.jsonl)
        return StepResult(loss=loss, count=int(y.shape[0]), metrics={"top1": 100.0 * correct})

    @torch.no_grad()
    def after_backward(self) -> None:
        """FGSM update of δ from the last forward's input gradient: ``clip(δ + ε·sign(g), -ε, ε)``.

        The gradient may be scaled (GradScaler, accumulation): only its sign is used. A
        non-finite gradient entry (a float16 overflow) counts as zero.
        """
        x_adv, self._x_adv = self._x_adv, None
        if x_adv is None or x_adv.grad is None or self.delta is None:
            return
        step = self.eps * torch.nan_to_num(x_adv.grad, nan=0.0, posinf=0.0, neginf=0.0).sign()
        self.delta = (self.delta + step).clamp_(-self.eps, self.eps)

    def state_dict(self) -> dict[str, Any]:
        """δ (on the CPU; None before the first batch) and ε, for the run checkpoint."""
        return {"delta": None if self.delta is None else self.delta.detach().cpu(), "eps": self.eps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpointed δ (moved to the batch's device on the next call).

        Raises:
            ValueError: the checkpoint was trained with another ε.
        """
        eps = float(state.get("eps", self.eps))
        if abs(eps - self.eps) > 1e-12:
            raise ValueError(f"the checkpoint's Free adversarial training used eps={eps:.6g}, this run {self.eps:.6g}")
        delta = state.get("delta")
        self.delta = None if delta is None else delta.clone()
        self._x_adv = None
