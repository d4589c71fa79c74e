"""Process-group set-up for single-process, ``torchrun`` multi-process and multi-node runs.

``torchrun`` (``python -m torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when ``WORLD_SIZE > 1`` we join the
process group with ``nccl`` on CUDA and ``gloo`` on CPU. Only rank 0 writes files and
prints; metrics are summed over ranks with :func:`all_reduce_sum`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from ..errors import RunError, UsageError
from ..method.infomax import infomax_loss

__all__ = [
    "DistEnv",
    "all_gather_object",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup",
    "init_distributed",
    "needs_find_unused_parameters",
    "resolve_device",
    "sync_device",
]


_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size``, its ``device``, and whether it is the writer."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` is ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; anything else is parsed by torch.

    Raises:
        UsageError: not a device name (``--device tpu``).
        RunError: a device this machine does not have (``--device cuda`` without CUDA, ``cuda:3``
            with two GPUs, ``mps`` off a Mac).

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    pedconv.errors.UsageError: --device tpu: not a device; use auto, cpu, cuda, cuda:N or mps
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {spec}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    if not getattr(backend, "is_available", lambda: False)():
        raise RunError(f"--device {spec}: {device.type.upper()} is not available on this machine (use --device cpu)")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise RunError(f"--device {spec}: there is no CUDA device {device.index} (this machine has "
                           f"{torch.cuda.device_count()})")
    return device


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a clock read after it times the work.

    >>> sync_device(torch.device("cpu"))
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group described by the ``torchrun`` environment, if any.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) this is a plain single process and no
    process group is created. An already initialised group (e.g. by a caller) is reused.

    >>> env = init_distributed("cpu")   # outside torchrun
    >>> env.world_size, env.is_main
    (1, True)
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    owns = False
    if world_size > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
            owns = True
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


def cleanup(env: DistEnv) -> None:
    """Leave the process group if :func:`init_distributed` created it (a caller's group is kept)."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op in a single process)."""
    if env.distributed:
        dist.barrier()


def all_reduce_sum(values: Sequence[float], env: DistEnv) -> list[float]:
    """Sum a list of numbers over ranks (float64, on the process's device); returns the sums.

    >>> all_reduce_sum([1.0, 2.0], DistEnv())
    [1.0, 2.0]
    """
    if not env.distributed:
        return [float(v) for v in values]
    device = env.device if env.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; for small objects and checkpoints).

    >>> broadcast_object({"a": 1}, DistEnv())
    {'a': 1}
    """
    if not env.distributed:
        return obj
    box = [obj if env.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=env.device if env.device.type == "cuda" else None)
    return box[0]


def all_gather_object(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj``, indexed by rank.

    >>> all_gather_object(3, DistEnv())
    [3]
    """
    if not env.distributed:
        return [obj]
    out: list[Optional[Any]] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def needs_find_unused_parameters(model: torch.nn.Module, input_shape: tuple[int, ...], device: torch.device,
                                 infomax_weight: float) -> bool:
    """Whether DDP must look for unused parameters: one forward/backward of a copy of ``model`` (the
    RNG forked, so nothing of the run changes) with the training loss's info-max term; True if some
    trainable parameter receives no gradient (e.g. PEDConv's info-max decoders with weight 0).

    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> needs_find_unused_parameters(net, (2, 1, 2, 2), torch.device("cpu"), 0.0)
    False
    """
    probe = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        out = probe(torch.zeros(input_shape, device=device))
        loss = out.float().sum()
        if infomax_weight:
            loss = loss + infomax_weight * infomax_loss(probe)
        loss.backward()
    return any(p.requires_grad and p.grad is None for p in probe.parameters())
