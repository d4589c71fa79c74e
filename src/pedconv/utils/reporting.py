"""The pieces of a report: markdown tables, matplotlib figures (optional), the machine line.

matplotlib is an optional dependency (``pip install pedconv[plot]``): :func:`pyplot` gives
``None`` without it and the callers skip their plots. Figures are drawn with the
non-interactive Agg backend and written atomically by :func:`save_figure`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, Optional

from .atomic import PathLike, atomic_write

__all__ = ["csv_table", "json_ready", "machine_description", "markdown_table", "pyplot", "save_figure"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table, one line per row, ending with a newline (cells as ``str``).

    >>> print(markdown_table(["model", "top-1"], [["a", "91.2"], ["b", 90]]), end="")
    | model | top-1 |
    | --- | --- |
    | a | 91.2 |
    | b | 90 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts as CSV text (RFC 4180: ``\\r\\n`` line ends), the first row's keys as the header.

    >>> csv_table([{"model": "a", "macs": 1}, {"model": "b", "macs": 2}]).splitlines()
    ['model,macs', 'a,1', 'b,2']
    """
    if not rows:
        return ""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def pyplot() -> Optional[ModuleType]:
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is not installed.

    >>> plt = pyplot()
    >>> plt is None or plt.get_backend().lower() == "agg"
    True
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig: Any, path: PathLike, dpi: int = 110) -> None:
    """Write a matplotlib figure as PNG to ``path`` atomically, then close it.

    >>> import pathlib, tempfile
    >>> plt = pyplot()
    >>> if plt is not None:
    ...     p = pathlib.Path(tempfile.mkdtemp()) / "f.png"
    ...     save_figure(plt.figure(), p)
    ...     assert p.read_bytes()[:4] == b"\\x89PNG"
    """
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def machine_description() -> str:
    """One line naming the machine a measurement ran on: architecture, CPUs, torch and its threads.

    >>> machine_description()  # doctest: +ELLIPSIS
    '... CPUs, torch ..., ... threads'
    """
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def json_ready(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every nan/inf float replaced by None, so that ``json.dumps`` writes strict
    JSON (``null``; Python would write ``NaN``, which JSON readers reject).

    >>> json_ready({"AP": 12.5, "AP_L": float("nan")})
    {'AP': 12.5, 'AP_L': None}
    """
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
