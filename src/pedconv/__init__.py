"""pedconv: Parameter Efficient Dynamic Convolution (Hou & Kung, BMVC 2021) for PyTorch.

The package reads as the architecture:

* :mod:`pedconv.method`      the method, Eq. (1)-(7): :class:`PEDConv2d` (and 1-D/3-D), :class:`SpatialPEDConv2d`
* :mod:`pedconv.execution`   how the per-sample convolution runs fast (exact strategies)
* :mod:`pedconv.baselines`   CondConv, DY-Conv, ODConv, DCD, WeightNet
* :mod:`pedconv.convert`     swapping the convolutions of any CNN
* :mod:`pedconv.deploy`      :func:`fuse_bn` (BatchNorm folding) and ONNX graph checks
* :mod:`pedconv.models`      registry, builders, published numbers, the authors' weights
* :mod:`pedconv.training`    ``pedconv train / eval / compare``: data, loop, checkpoints, DDP
* :mod:`pedconv.tasks`       downstream tasks built on :mod:`pedconv.training`
* :mod:`pedconv.tools`       FLOP counting (``pedconv profile``) and ``pedconv bench``
* :mod:`pedconv.testing`     the slow reference implementations the tests compare against

>>> import torch, torchvision, pedconv
>>> model = pedconv.convert(torchvision.models.resnet18())
>>> model.eval()(torch.randn(1, 3, 224, 224)).shape
torch.Size([1, 1000])

The names above are imported on first use (PEP 562), so that ``import pedconv`` and the
command line's ``pedconv --help`` do not load torch; ``pedconv.__version__`` never does.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "CONV_KINDS": "convert", "conv_kind": "convert", "convert": "convert", "select_convs": "convert",
    "STRATEGIES": "execution", "pedconv_conv1d": "execution", "pedconv_conv2d": "execution",
    "pedconv_conv3d": "execution",
    "fuse_bn": "deploy",
    "ACTIVATIONS": "method", "COMPONENTS": "method", "INFOMAX_WEIGHT": "method", "ComponentGenerator": "method",
    "CPFactors": "method", "PEDConv1d": "method", "PEDConv2d": "method", "PEDConv3d": "method",
    "SpatialPEDConv2d": "method", "compose_weight": "method",
    "infomax_loss": "method", "strip_infomax": "method",
    "create_model": "models", "list_models": "models", "load_authors_checkpoint": "models", "register_model": "models",
    "ModelProfile": "tools.flops", "profile_model": "tools.flops",
}
# Former names, kept so that existing code keeps working: "reference" now means the test
# oracles in :mod:`pedconv.testing` only.
_ALIASES = {"load_reference_checkpoint": "load_authors_checkpoint"}
# Subpackages that ``import pedconv`` used to import, reachable as attributes as before.
_SUBMODULES = ("baselines", "deploy", "execution", "method", "models", "tools", "training")

if TYPE_CHECKING:  # what the lazy names are, for type checkers
    from .convert import CONV_KINDS, conv_kind, convert, select_convs
    from .deploy import fuse_bn
    from .execution import STRATEGIES, pedconv_conv1d, pedconv_conv2d, pedconv_conv3d
    from .method import (
        ACTIVATIONS,
        COMPONENTS,
        INFOMAX_WEIGHT,
        ComponentGenerator,
        CPFactors,
        PEDConv1d,
        PEDConv2d,
        PEDConv3d,
        SpatialPEDConv2d,
        compose_weight,
        infomax_loss,
        strip_infomax,
    )
    from .models import create_model, list_models, load_authors_checkpoint, register_model
    from .tools.flops import ModelProfile, profile_model

    load_reference_checkpoint = load_authors_checkpoint

__all__ = [
    "ACTIVATIONS",
    "COMPONENTS",
    "CONV_KINDS",
    "INFOMAX_WEIGHT",
    "STRATEGIES",
    "CPFactors",
    "ComponentGenerator",
    "ModelProfile",
    "PEDConv1d",
    "PEDConv2d",
    "PEDConv3d",
    "SpatialPEDConv2d",
    "__version__",
    "compose_weight",
    "conv_kind",
    "convert",
    "create_model",
    "fuse_bn",
    "infomax_loss",
    "list_models",
    "load_authors_checkpoint",
    "pedconv_conv1d",
    "pedconv_conv2d",
    "pedconv_conv3d",
    "profile_model",
    "register_model",
    "select_convs",
    "strip_infomax",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and keep the name here (PEP 562)."""
    target = _ALIASES.get(name, name)
    if target in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[target]}"), target)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_ALIASES, *_SUBMODULES})


class _Package(types.ModuleType):
    """The package's module type: importing the submodule :mod:`pedconv.convert` (which the
    import system records as the package attribute ``convert``) must not hide the function
    :func:`pedconv.convert`, as it did not when the package imported everything up front."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# pedconv's classifiers join timm's registry once timm is imported (now, or when it is): then
# `import pedconv, timm; timm.create_model("pedconv_resnet18")` works, and so does timm's
# train.py with --device-modules pedconv. Neither torch nor timm is imported here.
from .timm import install_timm_hook  # noqa: E402

install_timm_hook()
