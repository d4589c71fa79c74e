"""Where the offline scene sets live, and the options that size them (``pedconv detect`` / ``segment``).

Without ``--data-dir``, a task trains on a scene set of real Fashion-MNIST items
(:func:`pedconv.tasks.scenes.make_offline_sets`), written once in the real formats into
``<cache>/scenes/n<train>-v<val>-s<size>-seed<seed>/`` and reused afterwards. The cache is
``--offline-dir``, else ``$PEDCONV_CACHE``, else ``~/.cache/pedconv``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..utils.options import non_negative_int, positive_int

__all__ = ["add_offline_arguments", "cache_dir", "offline_root"]


def cache_dir() -> Path:
    """``$PEDCONV_CACHE`` or ``~/.cache/pedconv``.

    >>> cache_dir().name in ("pedconv", os.environ.get("PEDCONV_CACHE", "pedconv").rstrip("/").split("/")[-1])
    True
    """
    return Path(os.environ.get("PEDCONV_CACHE") or Path.home() / ".cache" / "pedconv")


def add_offline_arguments(group: Any) -> None:
    """The options the scene tasks share, added to their data group: ``--val-subset``,
    ``--workers`` and those of the offline scene set."""
    group.add_argument("--val-subset", type=positive_int, default=None,
                       help="evaluate on the first N validation images")
    group.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: min(4, CPUs))")
    group.add_argument("--offline-scenes", type=positive_int, default=512,
                       help="offline set (no --data-dir): training scenes")
    group.add_argument("--val-scenes", type=positive_int, default=128, help="offline set: validation scenes")
    group.add_argument("--scene-size", type=positive_int, default=128, help="offline set: canvas side in pixels")
    group.add_argument("--scene-seed", type=non_negative_int, default=0,
                       help="offline set: generator seed (a given size and seed always give the same set)")
    group.add_argument("--offline-dir", default=None, help="offline set: cache folder (default: $PEDCONV_CACHE or "
                                                           "~/.cache/pedconv)")


def offline_root(args: argparse.Namespace, fmt: str) -> Path:
    """The root of the offline set that ``args`` describe, in format ``fmt`` (``"coco"`` or
    ``"ade20k"``), generated now if it is not complete yet."""
    from .scenes import make_offline_sets

    base = Path(args.offline_dir) if args.offline_dir else cache_dir()
    folder = base / "scenes" / f"n{args.offline_scenes}-v{args.val_scenes}-s{args.scene_size}-seed{args.scene_seed}"
    roots = make_offline_sets(folder, train=args.offline_scenes, val=args.val_scenes, size=args.scene_size,
                              seed=args.scene_seed, formats=(fmt,))
    return Path(roots[fmt])
