"""The study presets of ``pedconv compare --preset NAME``: models, seeds, width and recipe.

Each is a YAML file, ``pedconv/configs/studies/NAME.yaml`` (``configs/studies/`` in a checkout):
this project's own setting for one published study (the docs' results page, results/), with what it costs on
the 2-core CPU the project is built on. ``--preset`` also takes the path of a study file of
your own, with the same keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Union

import yaml

from ..configs import resolve, shipped
from ..errors import UsageError

__all__ = ["PRESETS", "load_preset"]

_KEYS: dict[str, Any] = {"models": list, "seeds": list, "width": (int, type(None)), "init_from": str, "train": dict}
_REQUIRED = ("models", "seeds", "train")


def load_preset(preset: Union[str, os.PathLike]) -> dict[str, Any]:
    """The study preset named ``preset`` (a shipped one) or in the YAML file ``preset``, checked.

    Raises:
        UsageError: no such preset or file, bad YAML, unknown or missing keys, wrong types.

    Example:
        >>> load_preset("quick")["seeds"]
        [0]
    """
    try:
        path = resolve(preset, "studies")
    except FileNotFoundError as e:
        raise UsageError(f"--preset {str(e).replace('study preset ', '', 1)}") from None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"--preset {path}: not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise UsageError(f"--preset {path}: expected a mapping with keys {', '.join(_KEYS)}")
    unknown = sorted(set(data) - set(_KEYS))
    missing = [k for k in _REQUIRED if k not in data]
    if unknown or missing:
        problems = ([f"unknown keys {', '.join(unknown)}"] if unknown else []) + (
            [f"missing {', '.join(missing)}"] if missing else [])
        raise UsageError(f"--preset {path}: {'; '.join(problems)} (keys: {', '.join(_KEYS)})")
    for key, value in data.items():
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool):
            raise UsageError(f"--preset {path}: {key} is {value!r}, of the wrong type")
    if not data["models"] or not all(isinstance(m, str) for m in data["models"]):
        raise UsageError(f"--preset {path}: models must be a non-empty list of model specs")
    if not data["seeds"] or not all(isinstance(s, int) and not isinstance(s, bool) for s in data["seeds"]):
        raise UsageError(f"--preset {path}: seeds must be a non-empty list of integers")
    return {"width": None, **data}


PRESETS: dict[str, dict[str, Any]] = {name: load_preset(name) for name in shipped("studies")}
"""Every shipped study preset by name, as :func:`load_preset` reads it."""
