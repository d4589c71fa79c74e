"""``key=value`` items with YAML values: ``--model-kwargs rank=2`` and ``pedconv compare``'s
model specs ``NAME:rank=2:components=[gamma]``.

A value is read with ``yaml.safe_load``: ``2`` is an int, ``0.5`` a float, ``[gamma, phi]``
a list, ``false`` a bool, ``learned`` a string, and an empty value is None. Keys must be
Python identifiers (they become keyword arguments).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from ..errors import UsageError

__all__ = ["KeyValueError", "parse_key_values"]


class KeyValueError(UsageError):
    """An item that is not ``key=value`` (``syntax``), or whose value is not valid YAML.

    ``item`` is the offending text; the message names it.
    """

    def __init__(self, item: str, reason: str = "", syntax: bool = True) -> None:
        self.item, self.syntax = item, syntax
        super().__init__(f"{item!r} is not key=value" if syntax else f"{item!r}: {reason}")


def parse_key_values(items: Iterable[str]) -> dict[str, Any]:
    """``["rank=2", "components=[gamma]"]`` -> ``{"rank": 2, "components": ["gamma"]}``, in order.

    Raises:
        KeyValueError: an item without ``=`` or a valid key, or with a value that is not YAML.

    >>> parse_key_values(["rank=2", "components=[gamma, phi]", "sigma=learned", "tag="])
    {'rank': 2, 'components': ['gamma', 'phi'], 'sigma': 'learned', 'tag': None}
    >>> parse_key_values(["rank"])
    Traceback (most recent call last):
    ...
    pedconv.utils.kv.KeyValueError: 'rank' is not key=value
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise KeyValueError(str(item))
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise KeyValueError(str(item), f"the value is not valid YAML ({e})", syntax=False) from None
    return out
