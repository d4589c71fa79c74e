"""pedconv's classifiers in timm's registry (:mod:`pedconv.timm` says when this runs).

Every registered classification model whose name is not timm's goes in, with a
``pretrained_cfg`` (input size, mean/std, crop, first conv and classifier where known), so timm's
``resolve_data_config``, ``create_optimizer_v2`` and ``create_transform`` work on it.
``pretrained=True`` loads the released weights (:mod:`pedconv.models.weights`; only
``pedconv_resnet18`` has them) from the cache folder. The static baselines that timm already
has under the same name (:data:`LEFT_TO_TIMM`: ``resnet18``, ``resnet50``...) stay timm's; any
other name that timm has raises :class:`TimmNameClash`, naming it.

Example:
    >>> import timm
    >>> "pedconv_resnet50" in register_with_timm() and "pedconv_resnet50" in timm.list_models("pedconv_*")
    True
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Callable, Optional

from ._registry import create_model, list_models, model_entrypoint
from .weights import PEDConvResNet18_Weights, get_weights

__all__ = ["LEFT_TO_TIMM", "TimmNameClash", "register_if_timm_is_imported", "register_with_timm", "registered"]

LEFT_TO_TIMM = frozenset({"resnet18", "resnet50", "resnet101", "efficientnet_b0", "mobilenetv1_100", "skresnet18",
                          "skresnext50_32x4d"})
"""pedconv's static baselines that timm has under the same name (the same architectures): timm's stay."""

_TASK_MODULES = ("pedconv.models.detection", "pedconv.models.segmentation")  # not timm-style classifiers
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_registered: list[str] = []


class TimmNameClash(RuntimeError):
    """A pedconv model name that timm already registers for another model."""


def registered() -> list[str]:
    """The names this module put in timm's registry (empty until :func:`register_with_timm` ran)."""
    return list(_registered)


def _candidates() -> list[str]:
    return [n for n in list_models() if n not in LEFT_TO_TIMM and model_entrypoint(n).__module__ not in _TASK_MODULES]


def _pretrained_cfg(name: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a pedconv classifier (ImageNet preprocessing; 32 px for the
    CIFAR-style ResNets; the released file's URL where there is one)."""
    cifar = "cifar" in name
    cfg: dict[str, Any] = {
        "url": "", "num_classes": 10 if cifar else 1000, "input_size": (3, 32, 32) if cifar else (3, 224, 224),
        "pool_size": None if cifar else (7, 7), "crop_pct": 1.0 if cifar else 0.875, "interpolation": "bilinear",
        "mean": _IMAGENET_MEAN, "std": _IMAGENET_STD, "origin_url": "https://github.com/zejiangh/PEDConv",
        "paper_ids": "BMVC 2021 (Hou & Kung)",
    }
    if "resnet" in name and not cifar:
        cfg.update(first_conv="conv1", classifier="fc")
    if name == "pedconv_resnet18":
        release = PEDConvResNet18_Weights.AUTHORS_IMAGENET
        cfg.update(url=release.url, file=release.filename, notes=(f"top-1 {release.meta['top1']} (the authors' "
                                                                   "release); pedconv reads it from its cache folder",))
    return cfg


def _entrypoint(name: str) -> Callable[..., Any]:
    """A timm entry point named ``name`` that builds pedconv's model (timm's keywords handled)."""
    def build(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: Optional[dict] = None,
              cache_dir: Any = None, **kwargs: Any) -> Any:
        from timm.models import resolve_pretrained_cfg

        cfg = resolve_pretrained_cfg(name, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
        if pretrained:
            released, _ = get_weights(name, "DEFAULT")  # raises for a model without released weights
            model = create_model(name, weights=released.path(cache_dir), **kwargs)
        else:
            model = create_model(name, **kwargs)
        model.pretrained_cfg = model.default_cfg = cfg.to_dict()
        return model

    build.__name__ = build.__qualname__ = name
    build.__module__ = __name__
    build.__doc__ = f"pedconv's ``{name}`` (:func:`pedconv.create_model`), for ``timm.create_model``."
    return build


def register_with_timm(names: Optional[Sequence[str]] = None) -> list[str]:
    """Put pedconv's classifiers (or ``names``) in timm's registry; idempotent. Returns the names.

    Raises:
        TimmNameClash: a name timm already has for a model of its own.
    """
    from timm.models import generate_default_cfgs, register_model
    from timm.models._registry import _model_entrypoints

    todo = [n for n in (names if names is not None else _candidates()) if n not in _registered]
    clashes = sorted(n for n in todo if n in _model_entrypoints and _model_entrypoints[n].__module__ != __name__)
    if clashes:
        raise TimmNameClash(f"pedconv models named like timm's own: {', '.join(clashes)} (rename them, or add them "
                            "to pedconv.timm.LEFT_TO_TIMM when they are the same architecture)")
    module = sys.modules[__name__]
    cfgs = generate_default_cfgs({n: _pretrained_cfg(n) for n in todo})
    module.default_cfgs = {**getattr(module, "default_cfgs", {}), **cfgs}  # type: ignore[attr-defined]
    for n in todo:
        register_model(_entrypoint(n))
        _registered.append(n)
    return registered()


def register_if_timm_is_imported() -> None:
    """:func:`register_with_timm` when timm is imported (``pedconv.models`` calls it as it completes)."""
    if "timm" in sys.modules:
        register_with_timm()
