"""Model registry: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, TypeVar

import torch.nn as nn

from .initialization import apply_init, check_init

__all__ = ["check_builder_options", "create_model", "list_models", "model_entrypoint", "register_model"]

_F = TypeVar("_F", bound=Callable[..., nn.Module])
_MODELS: dict[str, Callable[..., nn.Module]] = {}
_weights_loader: Optional[Callable[[str, Any, Optional[int], dict[str, Any]], nn.Module]] = None


def set_weights_loader(loader: Callable[[str, Any, Optional[int], dict[str, Any]], nn.Module]) -> None:
    """``create_model(name, weights=...)``'s loader, ``loader(name, weights, num_classes, kwargs)``:
    :mod:`pedconv.models.weights` sets it (the registry does not import the weights, which build
    their models through the registry)."""
    global _weights_loader
    _weights_loader = loader


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


def create_model(name: str, *, num_classes: Optional[int] = None, init: str = "default", weights: Any = None,
                 **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs; ``None``: the builder's own default (1000 for the
            ImageNet networks, 91 for the COCO detectors, 150 for the ADE20K segmenters, 10 for
            the CIFAR-style ResNets).
        init: ``"default"`` (each layer's own initialisation) or ``"authors"``: the PEDConv
            authors' network-level one (:func:`pedconv.models.initialization.authors_init`).
        weights: released weights (:mod:`pedconv.models.weights`): a member such as
            ``PEDConvResNet18_Weights.AUTHORS_IMAGENET``, its name (``"DEFAULT"``), or the path of
            its file; without a path the file is read from the cache folder
            (:func:`~pedconv.models.weights.weights_dir`), and a missing one raises with where to
            put it. With another ``num_classes`` the classifier starts fresh.
        **kwargs: passed to the builder (for PEDConv models, any :class:`~pedconv.PEDConv2d`
            option such as ``rank`` or ``components``, and conversion policies).

    Example:
        >>> import pedconv
        >>> model = pedconv.create_model("pedconv_resnet18", num_classes=10)
        >>> float(pedconv.create_model("resnet18", num_classes=10, init="authors").bn1.weight[0].detach())
        0.5
        >>> pedconv.create_model("cifar_resnet20", width=8).fc.out_features  # the builder's default
        10
    """

    builder = model_entrypoint(name)
    check_init(init)
    if weights is not None:
        if init != "default":
            raise ValueError(f"init={init!r} does not apply with weights= (the weights set every parameter)")
        assert _weights_loader is not None, "pedconv.models.weights sets the loader when pedconv.models is imported"
        return _weights_loader(name, weights, num_classes, kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return apply_init(builder(**kwargs), init)


def check_builder_options(kwargs: Mapping[str, Any], *accepting: Callable[..., Any], extra: Iterable[str] = (),
                          builder: str) -> None:
    """Refuse a keyword that none of the ``accepting`` callables names: torchvision's detectors and
    smp's models take ``**kwargs`` and drop an unknown one without a word (a typo, or
    ``static_weights`` for a builder that cannot use them, would otherwise do nothing). ``extra``:
    names those ``**kwargs`` do use.

    >>> def net(depth=2, *, width=8): ...
    >>> check_builder_options({"width": 4}, net, builder="tiny")
    >>> check_builder_options({"widht": 4}, net, builder="tiny")
    Traceback (most recent call last):
    ...
    TypeError: tiny() got an unexpected keyword argument 'widht' (its options: depth, width)
    """
    names = set(extra)
    for fn in accepting:
        names |= {p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise TypeError(f"{builder}() got an unexpected keyword argument {unknown[0]!r} "
                        f"(its options: {', '.join(sorted(n for n in names if not n.startswith('_')))})")
