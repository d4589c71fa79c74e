"""Training checkpoints: atomic writes, RNG state capture, validated loading.

A checkpoint is a plain dict saved with :func:`torch.save`; it loads with
``torch.load(weights_only=True)`` (no pickled code: RNG states are stored as tensors and
plain Python values). Writes are atomic: the bytes go to a temporary file in the target
directory, are flushed and fsync'ed, and the temporary file is renamed over the target with
:func:`os.replace`, so a crash at any moment leaves either the old or the new file, never a
partial one.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "atomic_copy",
    "atomic_save",
    "capture_rng_state",
    "check_model_compatible",
    "load_training_checkpoint",
    "restore_rng_state",
]

CHECKPOINT_FORMAT = "pedconv-train-v1"
_REQUIRED = ("format", "model", "model_args", "optimizer", "scheduler", "epoch", "batches_done", "global_step",
             "config", "rng", "history")
# Configuration entries that define the network or the data it sees: a resumed run must agree on them.
MODEL_KEYS = ("model", "model_kwargs", "data", "img_size")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not belong to this run."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> Path:
    """``torch.save(obj, path)`` so that ``path`` is always either the old or the complete new file.

    >>> import tempfile, torch
    >>> p = atomic_save({"w": torch.ones(2)}, tempfile.mkdtemp() + "/last.pt")
    >>> torch.load(p)["w"]
    tensor([1., 1.])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_copy(src: Union[str, os.PathLike], dst: Union[str, os.PathLike]) -> Path:
    """Copy ``src`` to ``dst`` with the same all-or-nothing guarantee as :func:`atomic_save`.

    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> _ = atomic_save({"a": 1}, d + "/last.pt")
    >>> atomic_copy(d + "/last.pt", d + "/best.pt").name
    'best.pt'
    """
    src, dst = Path(src), Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, length=1 << 24)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(dst.parent)
    return dst


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if initialised) CUDA generator states, ``weights_only``-loadable.

    >>> s = capture_rng_state(); a = torch.rand(1); restore_rng_state(s); torch.equal(a, torch.rand(1))
    True
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (a CUDA state is restored only where CUDA is in use).

    >>> restore_rng_state(capture_rng_state())
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def load_training_checkpoint(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read a pedconv training checkpoint onto the CPU, with errors that name the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated/corrupt, or is not a pedconv training checkpoint.

    >>> load_training_checkpoint("/nonexistent/last.pt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint /nonexistent/last.pt does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        if "Weights only load failed" in str(e):
            raise CheckpointError(f"checkpoint {path} holds Python objects that torch.load(weights_only=True) refuses "
                                  f"to unpickle, so it is not a plain `pedconv train` checkpoint") from e
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a pedconv training checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT!r}); for a bare state dict use "
                              f"`pedconv eval --model NAME --weights {path}`")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    return ckpt


def check_model_compatible(ckpt: Mapping[str, Any], config: Mapping[str, Any], path: Union[str, os.PathLike],
                           model: Optional[torch.nn.Module] = None) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and every mismatch between ``ckpt`` and this run.

    Compares the configuration entries in :data:`MODEL_KEYS` and, given ``model``, the names and
    shapes of its state dict.

    >>> ck = {"config": {"model": "cifar_resnet20", "model_kwargs": {}, "data": "fashion_mnist", "img_size": None}}
    >>> try:
    ...     check_model_compatible(ck, dict(ck["config"], model="resnet18"), "last.pt")
    ... except CheckpointError as e:
    ...     print(e)
    checkpoint last.pt does not match this run: model: checkpoint 'cifar_resnet20', run 'resnet18'
    """
    saved = ckpt.get("config", {})
    problems = [f"{k}: checkpoint {saved.get(k)!r}, run {config.get(k)!r}" for k in MODEL_KEYS
                if saved.get(k) != config.get(k)]
    if model is not None and not problems:
        own = model.state_dict()
        theirs = ckpt["model"]
        missing = sorted(set(own) - set(theirs))
        unexpected = sorted(set(theirs) - set(own))
        shapes = [f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in theirs and tuple(theirs[k].shape) != tuple(own[k].shape)]
        for label, items in (("missing in checkpoint", missing), ("unexpected in checkpoint", unexpected),
                             ("shape (checkpoint vs model)", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match this run: " + "; ".join(problems))
