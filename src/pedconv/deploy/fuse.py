"""Folding each BatchNorm that follows a convolution into that convolution (:func:`fuse_bn`).

In eval mode a BatchNorm is the per-channel affine map ``y = s * (z - mean) + beta`` with
``s = weight / sqrt(running_var + eps)``. When output channel ``o`` of the layer before it
is linear in weight row ``o`` and bias ``o`` (``z_o = <W_o, ...> + b_o``), scaling the row
by ``s_o`` and setting the bias to ``s_o * (b_o - mean_o) + beta_o`` computes the same thing.
That holds for:

* ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` (exact types: a subclass such as a
  weight-standardised conv may renormalise the rows);
* every PEDConv layer (:class:`~pedconv.method.base.PEDConvBase`: ``PEDConv2d``,
  ``SpatialPEDConv2d``, and later ones of other dimensions): ``W(x) = W_base * CP(x)`` with
  ``CP`` generated from the input, and ``gamma`` scales output channels, so channel ``o`` is
  linear in ``W_base[o]`` and ``bias[o]``; the spatial layer's per-pixel weight likewise;
* ``DyConv2d``: every kernel's row ``o`` and every kernel's bias ``o``; the softmax attention
  sums to one, so the aggregated bias is folded too;
* ``ODConv2d``: every kernel's row ``o`` (``alpha_f`` scales output channels), and its bias.

``CondConv2d`` is left alone: its sigmoid routing weights do not sum to one, so the BN shift
``beta - s * mean`` cannot be spread over the experts' biases exactly.

Which BatchNorm follows which convolution is read from a ``torch.fx`` trace in which the
convolutions and dynamic layers are leaves: a pair is folded when the BN's only input is the
conv's output and nothing else reads that output. Models that fx cannot trace (control flow
on values, ...) fall back to adjacency inside ``nn.Sequential`` containers (``conv`` then
``bn`` as consecutive children), which misses pairs that are attributes of a custom module.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ..baselines.base import BaselineConv2d
from ..baselines.condconv import CondConv2d
from ..baselines.dyconv import DyConv2d
from ..baselines.odconv import ODConv2d
from ..method.base import PEDConvBase

__all__ = ["fusable", "fuse_bn"]

_STATIC_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _output_channels(conv: nn.Module) -> Optional[int]:
    """The number of output channels of a foldable layer."""
    return getattr(conv, "out_channels", None)


def fusable(conv: nn.Module) -> tuple[bool, str]:
    """Whether a BatchNorm after ``conv`` folds into it exactly, and if not, why.

    Example:
        >>> fusable(nn.Conv2d(3, 8, 3))
        (True, '')
        >>> fusable(nn.Linear(3, 8))[0]
        False
    """
    if type(conv) in _STATIC_CONVS or isinstance(conv, (PEDConvBase, DyConv2d, ODConv2d)):
        return True, ""
    if isinstance(conv, CondConv2d):
        return False, "CondConv2d's sigmoid routing weights do not sum to one: the BN shift cannot be folded exactly"
    return False, f"{type(conv).__name__} is not a layer whose output channels are linear in its weight rows"


def _bn_affine(bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    """``(s, shift)`` in float64 with ``bn(z) = s * z + shift`` per channel (eval mode)."""
    assert bn.running_mean is not None and bn.running_var is not None
    mean, var = bn.running_mean.double(), bn.running_var.double()
    s = torch.rsqrt(var + bn.eps)
    shift = -mean * s
    if bn.weight is not None:
        s = s * bn.weight.double()
        shift = shift * bn.weight.double()
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return s, shift


def _scale_rows(weight: Tensor, s: Tensor) -> None:
    """``weight *= s`` along dim 0 (any number of trailing dims), in place, exact to rounding."""
    view = s.reshape(-1, *([1] * (weight.dim() - 1)))
    weight.copy_((weight.double() * view).to(weight.dtype))


def _new_bias(like: Tensor, shape: tuple[int, ...]) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape, dtype=like.dtype, device=like.device), requires_grad=like.requires_grad)


@torch.no_grad()
def _fold(conv: nn.Module, bn: _BatchNorm) -> None:
    """Fold ``bn`` into ``conv`` (see the module docstring for why each case is exact)."""
    s, shift = _bn_affine(bn)
    weight: Tensor = conv.weight  # type: ignore[assignment]
    if isinstance(conv, (DyConv2d, ODConv2d)):
        kernels = weight.shape[0] // s.numel()  # K kernels stacked along dim 0
        _scale_rows(weight, s.repeat(kernels))
        if conv.bias is None:
            shape = (kernels, s.numel()) if isinstance(conv, DyConv2d) else (s.numel(),)
            conv.bias = _new_bias(weight, shape)
            conv.use_bias = True
        bias: Tensor = conv.bias
        # DyConv: each kernel's bias; the attention sums to one, so the shift is exact per kernel.
        bias.copy_((bias.double() * s + shift).to(bias.dtype))
        return
    _scale_rows(weight, s)
    if conv.bias is None:
        conv.bias = _new_bias(weight, (s.numel(),))
    bias = conv.bias  # type: ignore[assignment]
    bias.copy_((bias.double() * s + shift).to(bias.dtype))


def _is_dynamic(module: nn.Module) -> bool:
    return isinstance(module, (PEDConvBase, BaselineConv2d))


def _conv_like(module: nn.Module) -> bool:
    """A convolution of any kind: a BN after it is folded, or reported when it cannot be."""
    return isinstance(module, _ConvNd) or _is_dynamic(module)


class _ConvLeafTracer(fx.Tracer):
    """fx tracer that keeps convolutions, BatchNorms and the dynamic layers opaque."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        opaque = isinstance(m, (*_STATIC_CONVS, _BatchNorm)) or _is_dynamic(m)
        return opaque or super().is_leaf_module(m, module_qualified_name)


def _pairs_from_fx(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, bn name)`` for each BN whose only input is a conv output read by nothing else."""
    graph = _ConvLeafTracer().trace(model)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(str(node.target)), _BatchNorm):
            continue
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        if src.op != "call_module" or not _conv_like(model.get_submodule(str(src.target))):
            continue
        if len(src.users) != 1 or calls[src.target] != 1 or calls[node.target] != 1:
            continue  # the conv output feeds something else too, or a module runs twice
        pairs.append((str(src.target), str(node.target)))
    return pairs


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, bn name)`` for consecutive children of every ``nn.Sequential`` (fx fallback)."""
    inside_dynamic = {
        id(sub) for m in model.modules() if _is_dynamic(m) for sub in m.modules() if sub is not m
    }
    registered = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    pairs = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or id(seq) in inside_dynamic:
            continue
        children = list(seq.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            # A module registered twice may also run elsewhere: without a trace, leave it.
            if isinstance(b, _BatchNorm) and _conv_like(a) and registered[id(a)] == registered[id(b)] == 1:
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def _names_of(model: nn.Module, module: nn.Module) -> Iterator[str]:
    """Every name under which ``module`` is registered in ``model`` (shared modules have several)."""
    return (n for n, m in model.named_modules(remove_duplicate=False) if m is module)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def _training_modules(model: nn.Module) -> list[str]:
    return [n or type(model).__name__ for n, m in model.named_modules() if m.training]


def fuse_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it, in place; returns ``model``.

    The model must be in eval mode (a BatchNorm in training mode normalises with batch
    statistics, which no weight can reproduce). Each folded BatchNorm is replaced by
    ``nn.Identity``; the model's eval outputs are unchanged up to float32 rounding.
    Folds static ``nn.Conv1d/2d/3d``, every PEDConv layer, ``DyConv2d`` and ``ODConv2d``
    (see :mod:`pedconv.deploy.fuse` for why each is exact); a BatchNorm after a layer whose
    fold would not be exact (``CondConv2d``, ``nn.Linear``...) is left in place with a warning,
    as is one whose input also feeds another layer. Pairs are found with ``torch.fx``; a
    model fx cannot trace falls back to adjacency inside ``nn.Sequential`` containers.

    Args:
        model: any ``nn.Module`` in eval mode.

    Returns:
        ``model``, with the BatchNorms folded.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``model`` (or a submodule) is in training mode.

    Example:
        >>> import torch, torchvision, pedconv
        >>> model = pedconv.convert(torchvision.models.resnet18(num_classes=10)).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> before = model(x)
        >>> fused = pedconv.fuse_bn(model)
        >>> fused.bn1, fused.layer1[0].bn2
        (Identity(), Identity())
        >>> torch.allclose(fused(x), before, atol=1e-4)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_bn expects an nn.Module, got {type(model).__name__}")
    training = _training_modules(model)
    if training:
        raise ValueError(
            f"fuse_bn needs a model in eval mode (call model.eval() first); in training mode: {', '.join(training[:3])}"
            + (f" and {len(training) - 3} more" if len(training) > 3 else "")
        )
    try:
        pairs = _pairs_from_fx(model)
    except Exception:  # any tracing failure: fall back to Sequential adjacency
        pairs = _pairs_from_sequentials(model)
    skipped = []
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        assert isinstance(bn, _BatchNorm)
        ok, why = fusable(conv)
        if ok and (not bn.track_running_stats or bn.running_mean is None or bn.running_var is None):
            ok, why = False, "the BatchNorm has no running statistics (it normalises with batch statistics)"
        if ok and _output_channels(conv) != bn.num_features:
            ok, why = False, f"{_output_channels(conv)} output channels but {bn.num_features} BN features"
        if not ok:
            skipped.append(f"{bn_name} after {conv_name}: {why}")
            continue
        _fold(conv, bn)
        for name in list(_names_of(model, bn)):
            _replace(model, name, nn.Identity())
    if skipped:
        warnings.warn("fuse_bn left BatchNorms in place: " + "; ".join(skipped), stacklevel=2)
    return model
