"""pedconv's classifiers in timm's registry: ``timm.create_model("pedconv_resnet50", num_classes=10)``.

Importing pedconv registers them once timm is imported too, in either order (a post-import hook
on ``timm``: ``import pedconv`` imports neither torch nor timm); :mod:`pedconv.models` imports
timm, so any use of pedconv's models registers them as well. timm's training script takes them
the same way::

    python train.py /data/imagenet --device-modules pedconv --model pedconv_resnet50 ...

Every pedconv classifier whose name is not timm's goes in (:data:`TIMM_MODELS`), with a
``pretrained_cfg`` (input size, mean/std, crop, first conv and classifier where known), so timm's
``resolve_data_config``, ``create_optimizer_v2`` and ``create_transform`` work on it.
``pretrained=True`` loads the released weights (:mod:`pedconv.models.weights`; only
``pedconv_resnet18`` has them) from the cache folder. The static baselines that timm already
has under the same name (:data:`LEFT_TO_TIMM`: ``resnet18``, ``resnet50``...) stay timm's; any
other name that timm has raises :class:`TimmNameClash`, naming it.

Example:
    >>> import timm, pedconv
    >>> model = timm.create_model("pedconv_resnet18", num_classes=10)
    >>> timm.data.resolve_data_config({}, model=model)["input_size"]
    (3, 224, 224)
    >>> "pedconv_cifar_resnet20" in timm.list_models("pedconv_*")
    True
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from typing import Any, Callable, Optional

__all__ = ["LEFT_TO_TIMM", "TIMM_MODELS", "TimmNameClash", "install_timm_hook", "register_with_timm", "registered"]

LEFT_TO_TIMM = frozenset({"resnet18", "resnet50", "resnet101", "efficientnet_b0", "mobilenetv1_100", "skresnet18",
                          "skresnext50_32x4d"})
"""pedconv's static baselines that timm has under the same name (the same architectures): timm's stay."""

TIMM_MODELS: tuple[str, ...] = (
    "cifar_resnet20", "condconv_cifar_resnet20", "condconv_mobilenet_v2", "condconv_resnet50",
    "dcd_cifar_resnet20", "dcd_mobilenet_v2", "dcd_resnet18", "dcd_resnet50", "dyconv_cifar_resnet20",
    "dyconv_mobilenet_v2", "dyconv_resnet18", "kw_cifar_resnet20", "kw_resnet18", "kw_resnet50", "mobilenet_v2",
    "odconv4x_resnet18", "odconv4x_resnet50", "odconv_cifar_resnet20", "odconv_resnet18", "odconv_resnet50",
    "pedconv_cifar_resnet20", "pedconv_efficientnet_b0", "pedconv_mobilenet_v2", "pedconv_mobilenetv1_100",
    "pedconv_mobilenetv1_100_deep", "pedconv_mobilenetv1_100_dw", "pedconv_mobilenetv1_100_pw",
    "pedconv_mobilenetv1_100_shallow", "pedconv_resnet101", "pedconv_resnet101_sd", "pedconv_resnet18",
    "pedconv_resnet18_rank4", "pedconv_resnet18_rank8", "pedconv_resnet50", "pedconv_resnet50_deterministic",
    "pedconv_resnet50_gamma", "pedconv_resnet50_phi", "pedconv_resnet50_psi", "pedconv_resnet50_sd",
    "sk_cifar_resnet20", "weightnet_cifar_resnet20", "weightnet_resnet50",
)
"""The pedconv classifiers registered with timm, written out so that registering imports nothing
of pedconv (it may happen in the middle of pedconv's own imports, when one of them imports timm);
a test holds it equal to the registry's classifiers minus :data:`LEFT_TO_TIMM`."""


_TASK_MODULES = ("pedconv.models.detection", "pedconv.models.segmentation")  # not timm-style classifiers
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_registered: list[str] = []


class TimmNameClash(RuntimeError):
    """A pedconv model name that timm already registers for another model."""


def registered() -> list[str]:
    """The names this module put in timm's registry (empty until :func:`register_with_timm` ran)."""
    return list(_registered)


def _candidates() -> list[str]:
    """The registry's classifiers that timm does not have: what :data:`TIMM_MODELS` must list."""
    from .models import list_models, model_entrypoint

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
    if name == "pedconv_resnet18":  # not a URL timm could fetch: pedconv's loader reads the file (pretrained=True)
        cfg.update(notes=("the authors' ImageNet release: pedconv.models.PEDConvResNet18_Weights.AUTHORS_IMAGENET",))
    return cfg


_TIMM_DEFAULTS = {"in_chans": 3, "drop_rate": 0.0, "drop_path_rate": 0.0}
"""Keywords timm's ``train.py`` always passes, with the values that mean "nothing to do"."""


def _drop_timm_defaults(name: str, kwargs: dict[str, Any]) -> None:
    """Remove the keywords of :data:`_TIMM_DEFAULTS` that ``name``'s builder does not take when
    they hold their do-nothing value; another value is an error naming it (not silently dropped)."""
    import inspect

    from .models import model_entrypoint

    taken = inspect.signature(model_entrypoint(name)).parameters
    for key, neutral in _TIMM_DEFAULTS.items():
        if key in kwargs and key not in taken:
            if kwargs[key] != neutral:
                raise ValueError(f"{name}: timm's {key}={kwargs[key]!r} has no counterpart in pedconv's builder "
                                 f"(only {key}={neutral!r} works)")
            del kwargs[key]


def _entrypoint(name: str) -> Callable[..., Any]:
    """A timm entry point named ``name`` that builds pedconv's model (timm's keywords handled)."""
    def build(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: Optional[dict] = None,
              cache_dir: Any = None, **kwargs: Any) -> Any:
        from timm.models import resolve_pretrained_cfg

        from .models import create_model
        from .models.weights import get_weights

        cfg = resolve_pretrained_cfg(name, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
        _drop_timm_defaults(name, kwargs)
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

    todo = [n for n in (names if names is not None else TIMM_MODELS) if n not in _registered]
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


class _AfterTimmImport(importlib.abc.MetaPathFinder):
    """Registers pedconv's classifiers right after ``import timm`` finishes (a post-import hook:
    ``import pedconv`` must not import torch or timm itself, and timm has no plug-in entry points)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # once; and so that the lookup below does not find this finder again
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            register_with_timm()

        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def install_timm_hook() -> None:
    """Register with timm now if timm is imported, else as soon as it is (``import pedconv`` calls this)."""
    if "timm" in sys.modules:
        register_with_timm()
    elif not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimmImport())
