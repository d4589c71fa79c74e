"""Checks of command-line option values that every command shares: numbers in a range, and
an output folder that can be written.

:func:`number` makes an argparse ``type`` that refuses what cannot work (``--lr -1``,
``--lr nan``, ``--momentum 2``) with a one-line reason, which argparse prints as
``argument --lr: must be > 0, got -1.0``; YAML configs go through the same ``type``.
:func:`check_output_folder` refuses, before a run starts, an output folder that could not
be created or written (a parent that is a file, or a read-only place).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

from ..errors import RunError

__all__ = ["check_output_folder", "non_negative", "non_negative_int", "number", "positive", "positive_int",
           "probability"]

N = TypeVar("N", int, float)


def _bounds_text(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"must be {'>' if low_open else '>='} {low:g}"
    return f"must be {'<' if high_open else '<='} {high:g}"


def number(kind: Callable[[str], N], low: Optional[float] = None, high: Optional[float] = None, *,
           low_open: bool = False, high_open: bool = False) -> Callable[[str], N]:
    """An argparse ``type``: ``kind`` (``int`` or ``float``) of the text, finite and within the bounds.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``; None means unbounded.

    >>> lr = number(float, 0, low_open=True)
    >>> lr("0.1")
    0.1
    >>> lr("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be > 0, got -1.0
    >>> number(float, 0, 1, high_open=True)("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a finite number, got nan
    """
    what = "an integer" if kind is int else "a number"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"{_bounds_text(low, high, low_open, high_open)}, got {value!r}")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")
    return parse


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (a missing run folder is created under it)."""
    while True:
        try:
            if path.exists() or path.parent == path:
                return path
        except OSError:  # e.g. a parent we may not read
            return path
        path = path.parent


def check_output_folder(folder: Union[str, os.PathLike], option: str = "--output") -> None:
    """Raise :class:`~pedconv.errors.RunError` unless ``folder`` is, or can be created as, a writable folder.

    The check writes (and removes) a temporary file in the folder or in its closest existing
    ancestor, so it is right for read-only mounts and for root as well.

    >>> check_output_folder(tempfile.mkdtemp())
    >>> check_output_folder("/sys/pedconv-run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pedconv.errors.RunError: --output /sys/pedconv-run: cannot write in /sys (...)
    """
    path = Path(folder).expanduser()
    base = _nearest_existing(path)
    if not base.is_dir():
        raise RunError(f"{option} {path} is a file, not a folder" if base == path
                       else f"{option} {path}: {base} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise RunError(f"{option} {path}: cannot write in {base} ({e.strerror or e})") from None


positive_int = number(int, 1)
"""``--epochs``, ``--batch-size``...: an integer >= 1."""
non_negative_int = number(int, 0)
"""``--seed``, ``--workers``...: an integer >= 0."""
positive = number(float, 0, low_open=True)
"""``--lr``, ``--clip-grad``...: a finite number > 0."""
non_negative = number(float, 0)
"""``--weight-decay``, ``--mixup``...: a finite number >= 0."""
probability = number(float, 0, 1)
"""``--mixup-prob``...: a number in [0, 1]."""
