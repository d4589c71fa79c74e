"""pedconv's classifiers in timm's registry: ``timm.create_model("pedconv_resnet50", num_classes=10)``.

Importing pedconv registers them once timm is imported too, in either order (a post-import hook
on ``timm``: ``import pedconv`` imports neither torch nor timm); :mod:`pedconv.models` imports
timm, so any use of pedconv's models registers them as well. timm's training script takes them
the same way::

    python train.py /data/imagenet --device-modules pedconv --model pedconv_resnet50 ...

What is registered, with which ``pretrained_cfg``, and the name-clash rule are in
:mod:`pedconv.models.timm_models`.

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
from typing import Any, Optional

__all__ = ["install_timm_hook"]


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
            models = sys.modules.get("pedconv.models")
            if models is not None and getattr(getattr(models, "__spec__", None), "_initializing", False):
                return  # pedconv.models is importing timm: it registers when it is complete
            _register()

        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def _register() -> None:
    from .models.timm_models import register_with_timm

    register_with_timm()


def install_timm_hook() -> None:
    """Register with timm now if timm is imported, else as soon as it is (``import pedconv`` calls this)."""
    if "timm" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimmImport())
