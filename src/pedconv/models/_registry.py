"""Model registry: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Optional, TypeVar

import torch.nn as nn

__all__ = ["create_model", "list_models", "model_entrypoint", "register_model"]

_F = TypeVar("_F", bound=Callable[..., nn.Module])
_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: _F) -> _F:
    """Register a builder under its function name; a name can be registered once."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"a model named {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: Optional[str] = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by an fnmatch pattern."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; unknown names raise with close matches."""
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see pedconv.list_models())") from None


def create_model(name: str, *, num_classes: int = 1000, init: str = "default", **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs.
        init: ``"default"`` (each layer's own initialisation) or ``"authors"``: the PEDConv
            authors' network-level one (:func:`pedconv.models.authors.authors_init`).
        **kwargs: passed to the builder (for PEDConv models, any :class:`~pedconv.PEDConv2d`
            option such as ``rank`` or ``components``, and conversion policies).

    Example:
        >>> import pedconv
        >>> model = pedconv.create_model("pedconv_resnet18", num_classes=10)
        >>> float(pedconv.create_model("resnet18", num_classes=10, init="authors").bn1.weight[0].detach())
        0.5
    """
    from .authors import apply_init, check_init  # authors.py builds models with create_model

    builder = model_entrypoint(name)
    check_init(init)
    return apply_init(builder(num_classes=num_classes, **kwargs), init)
