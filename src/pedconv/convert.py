"""Swap the ``nn.Conv2d`` layers of any CNN for :class:`~pedconv.PEDConv2d` (and ``nn.Conv1d`` /
``nn.Conv3d`` for :class:`~pedconv.PEDConv1d` / :class:`~pedconv.PEDConv3d`).

The policy options reproduce the paper's setting ("all standard convolution layers except
the first layer", Sec. 4.1), the authors' ResNets (static downsample shortcuts) and the
ablations of Table 5 (which kinds of convolution, which depths).
"""

from __future__ import annotations

import copy
import fnmatch
import inspect
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn

from .execution.geometry import CONV_MODULES
from .method.pedconv_nd import PEDConv1d, PEDConv2d, PEDConv3d, PEDConvNd

__all__ = ["CONV_KINDS", "POLICY_OPTIONS", "conv_kind", "convert", "layer_options", "replacement_layers",
           "select_convs", "split_convert_options"]

CONV_KINDS: tuple[str, ...] = ("pointwise", "depthwise", "dense", "grouped")
"""How :func:`conv_kind` classifies a convolution (Table 5c uses the first two)."""

_SHORTCUT_RE = re.compile(r"(^|\.)(downsample|shortcut|skip)(\.|$)")
_DEPTH_PRESETS = {"all": (0.0, 1.0), "shallow": (0.0, 0.5), "deep": (0.5, 1.0)}


def layer_options(layer: Any) -> frozenset[str]:
    """Keyword-only options of ``layer``'s constructor and ``from_conv``."""
    names = set()
    for fn in (layer.__init__, layer.from_conv):
        for name, p in inspect.signature(fn).parameters.items():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                names.add(name)
    names.discard("preserve_function")
    return frozenset(names)


def conv_kind(conv: nn.Module) -> str:
    """``"depthwise"`` (groups == Cin > 1), ``"pointwise"`` (1x1), ``"dense"`` (kxk,
    groups 1) or ``"grouped"`` (kxk, 1 < groups < Cin), for a 1-, 2- or 3-D convolution."""
    if conv.groups == conv.in_channels and conv.in_channels > 1:  # type: ignore[operator]
        return "depthwise"
    if all(k == 1 for k in conv.kernel_size):  # type: ignore[union-attr]
        return "pointwise"
    return "dense" if conv.groups == 1 else "grouped"


def _as_patterns(name: str, value: Union[str, Iterable[str], None]) -> tuple[str, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(p, str) for p in items):
        raise TypeError(f"{name} must be a pattern string or a list of them, got {value!r}")
    return items


def _depth_range(depth: Union[str, Sequence[float], None]) -> tuple[float, float]:
    if depth is None:
        return 0.0, 1.0
    if isinstance(depth, str):
        if depth not in _DEPTH_PRESETS:
            raise ValueError(f"depth must be one of {sorted(_DEPTH_PRESETS)} or (start, end), got {depth!r}")
        return _DEPTH_PRESETS[depth]
    lo, hi = depth
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"depth=(start, end) must satisfy 0 <= start < end <= 1, got {depth!r}")
    return float(lo), float(hi)


def select_convs(
    model: nn.Module,
    *,
    skip_first: bool = True,
    keep_shortcut: bool = False,
    kinds: Optional[Iterable[str]] = None,
    depth: Union[str, Sequence[float], None] = None,
    include: Union[str, Iterable[str], None] = None,
    exclude: Union[str, Iterable[str], None] = None,
    filter: Optional[Callable[[str, nn.Module], bool]] = None,
    dims: Iterable[int] = (1, 2, 3),
) -> list[str]:
    """Names of the ``nn.Conv1d/2d/3d`` modules (exact type) that :func:`convert` replaces.

    These are the conversion policy's options; :func:`convert` takes the same keywords.

    Args:
        model: any ``nn.Module``.
        skip_first: keep the model's first convolution (registration order) static, as
            the paper does.
        keep_shortcut: keep convolutions under a ``downsample``/``shortcut``/``skip``
            module static, as the authors' ResNets do.
        kinds: subset of :data:`CONV_KINDS` to convert (Table 5c); all by default.
        depth: ``"shallow"``, ``"deep"``, ``"all"`` or ``(start, end)`` fractions of the
            otherwise-eligible convolutions in registration order (Table 5d).
        include: fnmatch patterns on module names; if given, only matches are converted.
        exclude: fnmatch patterns on module names never to convert.
        filter: ``filter(name, conv) -> bool`` for any other policy.
        dims: the convolutions' numbers of spatial dimensions to consider (1, 2, 3); the
            "first convolution" of ``skip_first`` is the first among them.

    Example:
        >>> import torchvision
        >>> len(select_convs(torchvision.models.resnet18(), keep_shortcut=True, kinds=["dense"]))
        16
    """
    kinds_set = set(CONV_KINDS if kinds is None else ([kinds] if isinstance(kinds, str) else kinds))
    unknown = kinds_set - set(CONV_KINDS)
    if unknown or not kinds_set:
        raise ValueError(f"kinds must be a non-empty subset of {CONV_KINDS}, got {sorted(kinds_set)}")
    lo, hi = _depth_range(depth)
    include_p, exclude_p = _as_patterns("include", include), _as_patterns("exclude", exclude)

    dims_set = set(dims)
    if not dims_set or not dims_set <= set(CONV_MODULES):
        raise ValueError(f"dims must be a non-empty subset of (1, 2, 3), got {sorted(dims_set)}")
    types = tuple(CONV_MODULES[d] for d in sorted(dims_set))
    convs = [(n, m) for n, m in model.named_modules() if type(m) in types]
    chosen = []
    for i, (name, conv) in enumerate(convs):
        if skip_first and i == 0:
            continue
        if keep_shortcut and _SHORTCUT_RE.search(name):
            continue
        if conv_kind(conv) not in kinds_set:
            continue
        if include_p and not any(fnmatch.fnmatchcase(name, p) for p in include_p):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude_p):
            continue
        if filter is not None and not filter(name, conv):
            continue
        chosen.append(name)
    # Depth is a fraction of the otherwise-eligible layers, in registration order.
    n = len(chosen)
    return [name for j, name in enumerate(chosen) if lo * n <= j < hi * n]


POLICY_OPTIONS: frozenset[str] = frozenset(
    name for name, p in inspect.signature(select_convs).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
)
"""The keywords of :func:`select_convs`, which :func:`convert` accepts too."""


def convert(
    model: nn.Module,
    *,
    inplace: bool = False,
    layer: Any = PEDConv2d,
    preserve_function: Optional[bool] = None,
    **options: Any,
) -> nn.Module:
    """Replace ``nn.Conv2d`` layers (exact type) by :class:`~pedconv.PEDConv2d` (or ``layer``).

    With a PEDConv layer (the default), ``nn.Conv1d`` and ``nn.Conv3d`` become
    :class:`~pedconv.PEDConv1d` and :class:`~pedconv.PEDConv3d` too; other layers (the spatial
    variant, the baselines) replace ``nn.Conv2d`` only.
    Always use the returned module: it is a converted deep copy unless ``inplace``.
    Subclasses of ``nn.Conv2d`` (e.g. timm's ``Conv2dSame``) are left alone. Each new
    layer keeps the old one's weight, bias, device, dtype and training flag, and with
    ``preserve_function`` computes the same output until trained (see
    :meth:`PEDConv2d.from_conv`).

    Args:
        model: any ``nn.Module`` (not a TorchScript module); if it is itself a
            convolution that ``layer`` replaces, it is converted.
        inplace: modify ``model`` itself instead of a deep copy.
        layer: the replacement layer class; anything with a ``from_conv(conv,
            preserve_function=..., **options)`` classmethod: :class:`~pedconv.PEDConv2d`
            (default), :class:`~pedconv.SpatialPEDConv2d` or the baselines
            :class:`~pedconv.baselines.CondConv2d`, :class:`~pedconv.baselines.DyConv2d`,
            :class:`~pedconv.baselines.ODConv2d`.
        preserve_function: passed to ``layer.from_conv`` when given (each layer has its
            own default; see :meth:`PEDConv2d.from_conv`).
        **options: the conversion policy, i.e. the keywords of :func:`select_convs`
            (``skip_first``, ``keep_shortcut``, ``kinds``, ``depth``, ``include``,
            ``exclude``, ``filter``, ``dims``), and ``layer``'s keyword options (for PEDConv2d ``rank``,
            ``components``, ``variational``, ``sigma``, ``infomax``, ``activation``, ...).

    Returns:
        The converted model.

    Example:
        >>> import torchvision
        >>> model = convert(torchvision.models.resnet18(), keep_shortcut=True)
        >>> sum(isinstance(m, PEDConv2d) for m in model.modules())
        16
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            f"convert needs an eager nn.Module, got a TorchScript {type(model).__name__}: "
            "convert the eager model, then script or trace the result"
        )
    policy = {k: v for k, v in options.items() if k in POLICY_OPTIONS}
    layer_kwargs = _check_layer_options(layer, {k: v for k, v in options.items() if k not in POLICY_OPTIONS})
    if preserve_function is not None:
        layer_kwargs["preserve_function"] = preserve_function
    layers = _layers_for_dims(layer, policy)
    for ndim, new_layer in layers.items():
        if type(model) is CONV_MODULES[ndim]:
            return new_layer.from_conv(model, **layer_kwargs)
    names = select_convs(model, **policy)
    if not names:
        warnings.warn(
            f"convert: no convolution in {type(model).__name__} matched the policy; nothing converted", stacklevel=2
        )
    if not inplace:
        model = copy.deepcopy(model)
    # Build every replacement first, then assign: the tree is never changed while walked
    # and never walked into the new layers.
    replacements = []
    for name in names:
        conv = model.get_submodule(name)
        new_layer = layers[len(conv.kernel_size)]  # type: ignore[arg-type]
        replacements.append((name, new_layer.from_conv(conv, **layer_kwargs)))
    for name, new in replacements:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model


def replacement_layers(layer: Any) -> dict[int, Any]:
    """The class that :func:`convert` puts in place of a convolution, by its number of spatial dims.

    A PEDConv layer class stands for the whole family (1-, 2- and 3-D); any other layer
    replaces the convolutions of its own ``ndim`` (2 unless it says otherwise).

    >>> sorted(replacement_layers(PEDConv2d).items())[0]
    (1, <class 'pedconv.method.pedconv_nd.PEDConv1d'>)
    """
    if isinstance(layer, type) and issubclass(layer, PEDConvNd):
        return {1: PEDConv1d, 2: PEDConv2d, 3: PEDConv3d}
    return {int(getattr(layer, "ndim", 2)): layer}


def _layers_for_dims(layer: Any, policy: dict[str, Any]) -> dict[int, Any]:
    """:func:`replacement_layers`, checked against (and setting the default of) ``policy["dims"]``."""
    layers = replacement_layers(layer)
    if set(policy.get("dims", ())) - set(layers):
        raise ValueError(f"convert: {getattr(layer, '__name__', layer)} replaces {sorted(layers)}-D convolutions, "
                         f"got dims={sorted(policy['dims'])}")
    policy.setdefault("dims", tuple(layers))
    return layers


def split_convert_options(kwargs: dict[str, Any], layer: Any = PEDConv2d) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(convert's options, the rest)`` of a builder's keyword arguments: the policy keywords
    (:data:`POLICY_OPTIONS`), ``layer``'s options and ``preserve_function`` go to :func:`convert`,
    the rest to the architecture (a detector's ``score_thresh``, a segmenter's ``decoder_channels``).

    >>> split_convert_options({"rank": 2, "keep_shortcut": True, "score_thresh": 0.1})
    ({'rank': 2, 'keep_shortcut': True}, {'score_thresh': 0.1})
    """
    known = POLICY_OPTIONS | layer_options(layer) | {"preserve_function"}
    return {k: v for k, v in kwargs.items() if k in known}, {k: v for k, v in kwargs.items() if k not in known}


def _check_layer_options(layer: Any, options: dict[str, Any]) -> dict[str, Any]:
    if not callable(getattr(layer, "from_conv", None)):
        raise TypeError(f"layer must be a class with a from_conv(conv, ...) classmethod, got {layer!r}")
    valid = layer_options(layer)
    unknown = set(options) - valid
    if unknown:
        raise TypeError(
            f"convert got unknown option(s) {sorted(unknown)}; the policy options are {sorted(POLICY_OPTIONS)} "
            f"and {getattr(layer, '__name__', layer)} options are {sorted(valid)}"
        )
    return options
