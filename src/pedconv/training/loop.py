"""The training epoch, resumable at any optimizer step (:class:`Trainer`).

A training step, for each of ``accum`` micro-batches: set the DY-Conv / KernelWarehouse
attention temperature for the fractional epoch, run the task's
:class:`~pedconv.training.task.TrainStep` under autocast (classification's moves the uint8
batch to the device, normalises, augments and mixes it and takes the cross-entropy), then
``loss = task_loss + infomax_weight * pedconv.infomax_loss(model)``, backward (DDP gradient
sync only on the last micro-batch) and the step's ``after_backward`` hook if it has one.
Then clip (optional), ``optimizer.step()`` (through the GradScaler, a no-op unless float16
on CUDA) and ``scheduler.step_update(global_step)``. The step's loss, info-max term and own
metrics are summed on the device and read only when shown or saved.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any, Callable, Optional, cast

import torch
import torch.nn as nn
from timm.utils import dispatch_clip_grad
from torch import Tensor

from ..baselines.temperature import anneal_attention_temperatures
from ..method.infomax import infomax_loss
from .data import GlobalBatchSampler, mix_seed
from .distributed import DistEnv, all_gather_object, all_reduce_sum, sync_device
from .recipe import autocast
from .state import EpochSums
from .task import TrainStep

__all__ = ["Trainer"]


class Trainer:
    """Runs training epochs with a fixed set of components (built by :func:`pedconv.training.train.train`).

    Args:
        model: the model to call (the DDP wrapper in a distributed run).
        module: the unwrapped model (for DY-Conv temperatures and state dicts).
        optimizer, scheduler, scaler: the recipe's optimizer, timm per-step scheduler, GradScaler.
        loader, sampler: the training DataLoader and its :class:`GlobalBatchSampler`.
        step: the task's loss on one micro-batch (a :class:`~pedconv.training.task.TrainStep`).
        env: process layout; args: the resolved configuration (recipe fields).
        amp_dtype: autocast dtype when ``args.amp``.

    Example (one epoch of a toy problem):

    >>> import argparse
    >>> from pedconv.training.data import TensorImageDataset, collate_batch
    >>> ds = TensorImageDataset(torch.randint(0, 255, (16, 1, 4, 4), dtype=torch.uint8), torch.arange(16) % 2)
    >>> sampler = GlobalBatchSampler(len(ds), 4, seed=0)
    >>> loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> from timm.scheduler import CosineLRScheduler
    >>> args = argparse.Namespace(seed=0, grad_accum_steps=1, infomax_weight=1e-3, attention_anneal_epochs=10,
    ...                           clip_grad=None, clip_mode="norm", amp=False, skip_nonfinite=0)
    >>> from pedconv.tasks.classification import ClassifyStep
    >>> from pedconv.training.data import BatchPreprocessor
    >>> step = ClassifyStep(BatchPreprocessor((0.5,), (0.5,)), None, nn.CrossEntropyLoss(), torch.device("cpu"))
    >>> t = Trainer(net, net, opt, CosineLRScheduler(opt, 8, t_in_epochs=False), torch.amp.GradScaler("cpu",
    ...             enabled=False), loader, sampler, step, DistEnv(), args)
    >>> sums, step = t.train_epoch(epoch=0, start_step=0, global_step=0, sums=EpochSums())
    >>> sums.steps, sums.images, step
    (4, 16.0, 4)
    """

    def __init__(self, model: nn.Module, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 scaler: torch.amp.GradScaler, loader: Iterable, sampler: GlobalBatchSampler, step: TrainStep,
                 env: DistEnv, args: Any, amp_dtype: Optional[torch.dtype] = None, reporter: Any = None) -> None:
        self.model, self.module, self.optimizer = model, module, optimizer
        self.scheduler, self.scaler = scheduler, scaler
        self.loader, self.sampler, self.step = loader, sampler, step
        self.after_backward: Optional[Callable[[], None]] = getattr(step, "after_backward", None)
        self.env, self.args, self.amp_dtype = env, args, amp_dtype
        self.reporter = reporter
        # Non-finite losses: [micro-batches with one, first global step with one (-1: none)]. Kept
        # on the device and read only where the loop synchronises anyway (see first_nonfinite_step).
        self._nonfinite = torch.tensor([0.0, -1.0], dtype=torch.float64, device=env.device)
        self._step_bad = torch.zeros((), dtype=torch.bool, device=env.device)
        self.skipped_steps = 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the sampler's)."""
        return self.sampler.steps_per_epoch

    def train_epoch(self, epoch: int, start_step: int, global_step: int, sums: EpochSums,
                    on_step: Optional[Callable[[int, int, Callable[[], EpochSums]], None]] = None
                    ) -> tuple[EpochSums, int]:
        """Optimizer steps ``start_step .. steps_per_epoch - 1`` of ``epoch``.

        ``sums`` are this rank's running sums of the steps already done (from a checkpoint
        when resuming mid-epoch). ``on_step(step, global_step, current_sums)`` runs after
        every optimizer step (checkpointing; ``current_sums()`` gives the sums so far).
        Returns the updated sums and global step.
        """
        args, env, device = self.args, self.env, self.env.device
        steps = self.steps_per_epoch
        self.model.train()
        self.sampler.set_epoch(epoch, start_step)
        acc = torch.zeros(2, dtype=torch.float64, device=device)  # loss, infomax (sums of this session)
        metric_sums: dict[str, Tensor] = {}  # the step's own metrics (sums of this session)
        images = 0
        if self.reporter is not None:
            self.reporter.start_epoch(epoch, args.epochs, steps, start_step)
        sync_device(device)
        t_start = time.perf_counter()
        batches = iter(self.loader)
        for step in range(start_step, steps):
            anneal_attention_temperatures(self.module, epoch + step / steps, args.attention_anneal_epochs)
            # --skip-nonfinite also undoes what a skipped step's forward did to the buffers
            # (BatchNorm statistics), so that a spike leaves no trace.
            buffers = [b.detach().clone() for b in self.module.buffers()] if args.skip_nonfinite else None
            for micro in range(int(args.grad_accum_steps)):
                images += self._micro_batch(next(batches), epoch, step, micro, acc, metric_sums)
            self._optimizer_step(global_step, buffers)
            global_step += 1
            self.scheduler.step_update(num_updates=global_step)

            def current(step: int = step, images: int = images) -> EpochSums:
                # Reading the sums synchronises with the device: only done when they are shown or saved.
                return sums.then(_session(acc, metric_sums, images, step + 1 - start_step,
                                          time.perf_counter() - t_start))

            if self.reporter is not None and self.reporter.enabled:
                def values(images: int = images) -> dict[str, float]:
                    s = current()
                    shown = {"loss": s.loss / max(s.images, 1)}
                    shown.update({k: v / max(s.images, 1) for k, v in s.metrics.items()})
                    return {**shown, "lr": self.optimizer.param_groups[0]["lr"],
                            "img/s": images * env.world_size / max(time.perf_counter() - t_start, 1e-9)}
                self.reporter.step(step, values)
            if on_step is not None:
                on_step(step, global_step, current)
        sync_device(device)
        session = _session(acc, metric_sums, images, steps - start_step, time.perf_counter() - t_start)
        return sums.then(session), global_step

    def _micro_batch(self, batch: tuple[Tensor, Tensor], epoch: int, step: int, micro: int, acc: Tensor,
                     metric_sums: dict[str, Tensor]) -> int:
        """Forward and backward of one micro-batch; adds its task loss and info-max term (sums over
        its images) to ``acc`` and its step metrics to ``metric_sums``; returns its number of images."""
        args, device = self.args, self.env.device
        accum = int(args.grad_accum_steps)
        seed = mix_seed(args.seed, epoch, self.sampler.micro_batch_offset(step, micro))
        # DDP synchronises the gradients on the last micro-batch of the step only.
        accumulating = self.env.distributed and micro < accum - 1 and hasattr(self.model, "no_sync")
        sync = cast(Any, self.model).no_sync() if accumulating else contextlib.nullcontext()
        with sync:
            with autocast(device, args.amp, self.amp_dtype):
                result = self.step(self.model, batch, seed)
            task = result.loss
            info = infomax_loss(self.model)
            loss = task + args.infomax_weight * info if args.infomax_weight else task
            self.scaler.scale(loss / accum).backward()
        if self.after_backward is not None:
            self.after_backward()
        self._step_bad |= ~torch.isfinite(loss.detach())
        n = result.count
        with torch.no_grad():
            acc += torch.stack([task.detach().double() * n, info.detach().double() * n])
            for name, value in result.metrics.items():
                if name not in metric_sums:  # once per epoch, not a fresh tensor every micro-batch
                    metric_sums[name] = torch.zeros((), dtype=torch.float64, device=acc.device)
                metric_sums[name] += value.detach().double()
        return int(n)

    def first_nonfinite_step(self) -> Optional[int]:
        """The first global step (0-based) whose loss was nan/inf on any process, or ``None``.

        Reads the device (a synchronisation) and, in a distributed run, reduces over the
        processes: every process must call it at the same points (before checkpoints and
        at the end of each epoch).
        """
        count, first = self._nonfinite.tolist()
        if all_reduce_sum([count], self.env)[0] == 0:
            return None
        firsts = all_gather_object(first, self.env) if self.env.distributed else [first]
        return int(min(f for f in firsts if f >= 0))

    def _skipped(self, bad: Tensor, global_step: int, buffers: Optional[list[Tensor]]) -> bool:
        """``--skip-nonfinite``: skip this step if its loss was nan/inf on any process, up to the
        allowed number of times. One device read per step, which is why it is opt-in; agreed
        over processes, as DDP spreads a nan gradient to every rank."""
        if all_reduce_sum([float(bad.item())], self.env)[0] == 0:
            return False
        self.optimizer.zero_grad(set_to_none=True)
        if buffers is not None:
            with torch.no_grad():
                for b, saved in zip(self.module.buffers(), buffers):
                    b.copy_(saved)
        self.skipped_steps += 1
        if self.skipped_steps > self.args.skip_nonfinite:
            self._nonfinite[0] += 1  # one too many: reported by first_nonfinite_step
            self._nonfinite[1] = torch.where(self._nonfinite[1] < 0, float(global_step), self._nonfinite[1])
        elif self.reporter is not None:
            self.reporter.warn(f"step {global_step}: non-finite loss, step skipped "
                               f"({self.skipped_steps}/{self.args.skip_nonfinite} allowed)")
        return True

    def _optimizer_step(self, global_step: int, buffers: Optional[list[Tensor]] = None) -> None:
        args = self.args
        bad, self._step_bad = self._step_bad, torch.zeros_like(self._step_bad)
        if args.skip_nonfinite and self._skipped(bad, global_step, buffers):
            return
        self._nonfinite[0] += bad.double()
        self._nonfinite[1] = torch.where(bad & (self._nonfinite[1] < 0), float(global_step), self._nonfinite[1])
        if args.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            dispatch_clip_grad(self.module.parameters(), value=args.clip_grad, mode=args.clip_mode)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def _session(acc: Tensor, metric_sums: dict[str, Tensor], images: int, steps: int, seconds: float) -> EpochSums:
    """This session's sums (reads the device)."""
    loss, info = acc.tolist()
    return EpochSums(loss=loss, infomax=info, images=float(images), steps=steps, seconds=seconds,
                     metrics={k: float(v) for k, v in sorted(metric_sums.items())})
