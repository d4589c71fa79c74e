"""The YAML configs that ship with pedconv: training recipes (``<name>.yaml``, for ``pedconv train
--config``) and the study presets of ``pedconv compare --preset`` (``studies/<name>.yaml``).

In a source checkout the folder is also reachable as ``configs/`` at the repository's root. A
config option takes either a path to a YAML file or the name of a shipped one, so the commands in
the docs work from a ``pip install`` too.

Example:
    >>> from pedconv.configs import shipped, resolve
    >>> "fashion_mnist" in shipped() and "quick" in shipped("studies")
    True
    >>> resolve("fashion_mnist").name
    'fashion_mnist.yaml'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

__all__ = ["CONFIG_DIR", "resolve", "shipped"]

CONFIG_DIR = Path(__file__).resolve().parent
"""The folder of the shipped configs (inside the installed package)."""


def shipped(kind: str = "") -> list[str]:
    """Names of the shipped configs: training recipes (``kind=""``) or ``"studies"``."""
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def resolve(config: Union[str, os.PathLike], kind: str = "") -> Path:
    """``config`` as a file: a path that exists, else the shipped config of that name (with or
    without ``.yaml``; ``configs/<name>.yaml`` as the docs write it also finds the shipped file
    when run outside a checkout).

    Raises:
        FileNotFoundError: neither, with the shipped names.
    """
    path = Path(config)
    if path.is_file():
        return path
    shipped_file = CONFIG_DIR / kind / (path.stem + ".yaml")
    if path.suffix in ("", ".yaml") and shipped_file.is_file() and (
            len(path.parts) == 1 or path.parent.as_posix().rstrip("/").endswith(f"configs/{kind}".rstrip("/"))):
        return shipped_file
    what = "study preset" if kind == "studies" else "config"
    raise FileNotFoundError(f"{what} {config}: no such file, and not a shipped {what} "
                            f"(shipped: {', '.join(shipped(kind))})")
