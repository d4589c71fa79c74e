"""Execution of the per-sample PEDConv convolution: the strategies and the dispatch between them.

The layers (:mod:`pedconv.method`) compute the CP factors of Eq. (1)-(7); everything about
*how* the per-sample convolution of Eq. (3) is carried out lives in this package, behind the
single entry point :func:`pedconv_conv2d`. Every strategy is exact: they differ only in
cost, and :func:`select_strategy` picks the cheapest for the shapes at hand.

==================  ========================================  =============================
strategy            module                                    ``auto`` picks it for
==================  ========================================  =============================
``"factored"``      :mod:`pedconv.execution.factored`         deep layers; tracing/export
                    (its export form: :mod:`pedconv.execution.export`)
``"materialize"``   :mod:`pedconv.execution.materialize`      early or small layers, depthwise, B=1
``"hybrid"``        :mod:`pedconv.execution.hybrid`           (measured slower than materialize)
``"triton"``        :mod:`pedconv.execution.fused`            CUDA layers of the kinds measured faster
                    (fused Triton kernels; CPU: interpreter)  (:attr:`AutoThresholds.fused_kinds`)
``"naive"``         :mod:`pedconv.execution.slow`             (benchmark baseline)
``"loop"``          :mod:`pedconv.execution.slow`             (reference; slow)
==================  ========================================  =============================

A strategy is a function ``(x, weight, bias, factors, geometry) -> y``; a new one is one more
entry of :data:`STRATEGIES` (and, if it should run under ``torch.compile`` as an opaque
operator, of :mod:`pedconv.execution.compiled`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from ..method.cp import CPFactors
from . import compiled
from ._torch_specific import cast_for_autocast, is_exporting
from .export import export_conv2d
from .factored import factored
from .fused import AVAILABLE as TRITON_AVAILABLE
from .fused import fused
from .geometry import ConvGeometry, spatial_numel
from .hybrid import hybrid
from .materialize import materialize
from .slow import loop, naive

__all__ = [
    "AUTO_THRESHOLDS",
    "LAYER_KINDS",
    "SMALL_BATCH",
    "SMALL_WEIGHT_ELEMENTS",
    "STRATEGIES",
    "AutoThresholds",
    "Strategy",
    "layer_kind",
    "pedconv_conv1d",
    "pedconv_conv2d",
    "pedconv_conv3d",
    "run_strategy",
    "select_strategy",
]

Strategy = Callable[[Tensor, Tensor, Optional[Tensor], CPFactors, ConvGeometry], Tensor]
"""``(x, weight, bias, factors, geometry) -> y``: one exact way to run Eq. (3)."""

STRATEGIES: dict[str, Strategy] = {
    "factored": factored,
    "hybrid": hybrid,
    "materialize": materialize,
    "naive": naive,
    "loop": loop,
    "triton": fused,
}
"""Exact execution strategies by name; ``"auto"`` chooses among them."""


LAYER_KINDS = ("dense", "pointwise", "grouped", "depthwise")
"""The layer kinds :func:`layer_kind` tells apart (``auto``'s unit for the fused kernels)."""

BATCH_AS_GROUPS = frozenset({"materialize", "hybrid", "naive", "loop"})
"""The strategies that run each sample with its own kernel (the same convolution, by materialize
under ``torch.compile``: see :mod:`pedconv.execution.compiled`)."""

SMALL_BATCH = 128
"""The batch size the ``small_weight_elements`` thresholds are stated for: ``auto`` compares
per-sample sizes, so its choice does not change with the batch size (one compiled graph)."""


@dataclass(frozen=True)
class AutoThresholds:
    """The two numbers behind ``auto``'s choice on one device type.

    Attributes:
        weight_factor: ``"materialize"`` when ``weight_factor * W <= R^2 * A`` (``W`` the per-sample
            weight, ``A`` the activations that ``"factored"`` scales, both per sample): how much
            more a batch-sized weight element costs than an activation element.
        small_weight_elements: up to this many per-sample weight elements (all ranks) for a batch
            of :data:`SMALL_BATCH`, kxk layers still take ``"materialize"`` over ``"factored"``.
        source: where the numbers were measured (``None``: not measured on this device type;
            the CPU's numbers are used).
        fused_kinds: the :data:`LAYER_KINDS` for which the fused Triton kernels (``"triton"``)
            were measured faster than both ``"materialize"`` and ``"factored"`` (CUDA only;
            empty: never chosen).

    Example:
        >>> AUTO_THRESHOLDS["cpu"].weight_factor, AUTO_THRESHOLDS["cuda"].source is None
        (4.0, True)
        >>> AUTO_THRESHOLDS["cuda"].fused_kinds
        frozenset()
    """

    weight_factor: float = 4.0
    small_weight_elements: int = 1 << 23
    source: Optional[str] = None
    fused_kinds: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.fused_kinds) - set(LAYER_KINDS)
        if unknown:
            raise ValueError(f"fused_kinds must be among {LAYER_KINDS}, got {sorted(unknown)}")


AUTO_THRESHOLDS: dict[str, AutoThresholds] = {
    "cpu": AutoThresholds(
        4.0, 1 << 23, "2-core x86-64 CPU, torch 2.14.1: `pedconv bench` layer sweep of ResNet-50 / MobileNetV2 "
        "(weight_factor) and the CIFAR-style ResNet-20 layers at batch 128 (small_weight_elements)"),
    # Not measured yet: `python experiments/gpu_bench.py` on a CUDA machine fits the numbers and the
    # fused kinds and prints the entry to put here (results/gpu/auto_calibration.md).
    "cuda": AutoThresholds(4.0, 1 << 23, None),
}
"""``auto``'s thresholds per device type (others use the CPU's)."""

SMALL_WEIGHT_ELEMENTS = AUTO_THRESHOLDS["cpu"].small_weight_elements
"""The CPU's ``small_weight_elements`` (kept as a name for existing code)."""


def layer_kind(weight: Tensor, groups: int) -> str:
    """``"depthwise"`` (one input channel per filter), ``"pointwise"`` (a one-tap kernel),
    ``"grouped"`` (other grouped layers) or ``"dense"``: the unit of :attr:`AutoThresholds.fused_kinds`.

    Example:
        >>> layer_kind(torch.empty(8, 1, 3, 3), 8), layer_kind(torch.empty(8, 4, 1, 1), 1)
        ('depthwise', 'pointwise')
    """
    if weight.shape[1] == 1:
        return "depthwise"
    if math.prod(weight.shape[2:]) == 1:
        return "pointwise"
    return "grouped" if groups > 1 else "dense"


def select_strategy(
    x: Tensor, weight: Tensor, factors: CPFactors, geometry: ConvGeometry, exporting: Optional[bool] = None
) -> str:
    """The strategy ``"auto"`` resolves to for these operands.

    While tracing or exporting, always ``"factored"``: its graph does not depend on the batch
    size. Otherwise compare the extra memory traffic of the two exact fast paths: the
    per-sample weight (``B * R * Cout * Cin/groups * kh * kw``) against the scaled
    activations ``"factored"`` touches. ``exporting``: the caller's :func:`is_exporting`, if known.
    """
    if is_exporting() if exporting is None else exporting:
        return "factored"
    batch, cin = x.shape[:2]
    cout, cin_g = weight.shape[:2]
    taps, pixels = math.prod(weight.shape[2:]), spatial_numel(x.shape)
    rank = factors.rank
    limits = AUTO_THRESHOLDS.get(x.device.type, AUTO_THRESHOLDS["cpu"])
    if (TRITON_AVAILABLE and limits.fused_kinds
            and layer_kind(weight, geometry.groups) in limits.fused_kinds
            and not torch.are_deterministic_algorithms_enabled()):
        return "triton"  # measured faster for this kind of layer on this device type
    if batch == 1:
        return "materialize"  # one weight: as cheap as the static conv
    if torch.compiler.is_compiling() and not compiled.AVAILABLE:
        # Only without the custom operator (torch < 2.4, see .compiled): the shared-weight forms,
        # whose graph does not depend on the batch (a batch folded into the groups of a
        # convolution makes inductor recompile for every batch size).
        return "factored"
    if cin_g == 1:
        return "materialize"  # a per-sample depthwise kernel: as cheap as the static conv
    # Per-sample sizes: every comparison below is independent of the batch size, so that a
    # compiled model with a dynamic batch keeps one graph (no guard on the batch's range).
    out_pixels = math.prod([(n - 1) // s + 1 for n, s in zip(x.shape[2:], geometry.stride)])
    weight_elems = rank * cout * cin_g * taps
    if factors.psi is not None and taps > 1:
        # tap outputs (stride 1, no groups), else im2col columns
        act_elems = taps * cout * pixels if cin_g == cin and geometry.unit_stride else cin * taps * out_pixels
    else:
        act_elems = cin * pixels + cout * out_pixels  # scaled activations
    # "factored" repeats its convolution per rank; "materialize" composes ranks into one
    # weight; batch-sized weights cost more per element than activations (weight_factor).
    if limits.weight_factor * weight_elems <= rank * rank * act_elems:
        return "materialize"
    # Up to SMALL_WEIGHT_ELEMENTS per batch of SMALL_BATCH, the per-sample weight still beats
    # factored's tap passes, which cost several times the static conv on small layers, and
    # "hybrid" (measured on the CIFAR-style ResNet-20 layers at batch 128, conv path forward +
    # backward, 2-core x86-64: 64->64 at 7 px 16.1 ms materialize, 24.8 hybrid, 24.7 factored,
    # static 5.3; 32->32 at 14 px 9.5 / 10.0 / 74.7, static 5.9).
    small = weight_elems * SMALL_BATCH <= limits.small_weight_elements
    return "materialize" if small and factors.psi is not None and taps > 1 else "factored"


def pedconv_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    gamma: Optional[Tensor],
    phi: Optional[Tensor],
    psi: Optional[Tensor],
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[int, Sequence[int]] = 0,
    dilation: Union[int, Sequence[int]] = 1,
    groups: int = 1,
    strategy: str = "auto",
) -> Tensor:
    """Per-sample convolution with ``W_b = W_base * sum_r gamma_r (x) phi_r (x) psi_r`` (Eq. 3).

    The functional form of :class:`~pedconv.PEDConv2d`, as ``F.conv2d`` is of ``nn.Conv2d``.
    ``x`` must already carry any non-zero or asymmetric padding; ``padding`` is the
    symmetric zero padding left to the convolution. A ``None`` component means all ones.

    Args:
        x: input ``(B, Cin, H, W)``.
        weight: base weight ``(Cout, Cin/groups, kh, kw)``.
        bias: ``(Cout,)`` or ``None``.
        gamma: ``(B, R, Cout)`` or ``None``.
        phi: ``(B, R, Cin/groups)`` or ``None``.
        psi: ``(B, R, kh*kw)`` or ``None``.
        stride: as in ``F.conv2d``.
        padding: as in ``F.conv2d`` (integers).
        dilation: as in ``F.conv2d``.
        groups: as in ``F.conv2d``.
        strategy: a key of :data:`STRATEGIES` or ``"auto"``.

    Returns:
        ``(B, Cout, H_out, W_out)``, identical (up to rounding) for every strategy.

    Example:
        >>> import torch
        >>> x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
        >>> g, p, s = torch.rand(2, 1, 6), torch.rand(2, 1, 4), torch.rand(2, 1, 9)
        >>> pedconv_conv2d(x, w, None, g, p, s, padding=1).shape
        torch.Size([2, 6, 8, 8])
    """
    return _functional(2, x, weight, bias, CPFactors(gamma, phi, psi), stride, padding, dilation, groups, strategy)


def pedconv_conv1d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor], phi: Optional[Tensor],
    psi: Optional[Tensor], stride: Union[int, Sequence[int]] = 1, padding: Union[int, Sequence[int]] = 0,
    dilation: Union[int, Sequence[int]] = 1, groups: int = 1, strategy: str = "auto",
) -> Tensor:
    """:func:`pedconv_conv2d` in 1-D: ``x`` ``(B, Cin, L)``, ``weight`` ``(Cout, Cin/groups, k)``,
    ``psi`` ``(B, R, k)``; the functional form of :class:`~pedconv.PEDConv1d`.

    Example:
        >>> import torch
        >>> x, w = torch.randn(2, 4, 16), torch.randn(6, 4, 5)
        >>> pedconv_conv1d(x, w, None, torch.rand(2, 1, 6), None, torch.rand(2, 1, 5), padding=2).shape
        torch.Size([2, 6, 16])
    """
    return _functional(1, x, weight, bias, CPFactors(gamma, phi, psi), stride, padding, dilation, groups, strategy)


def pedconv_conv3d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor], phi: Optional[Tensor],
    psi: Optional[Tensor], stride: Union[int, Sequence[int]] = 1, padding: Union[int, Sequence[int]] = 0,
    dilation: Union[int, Sequence[int]] = 1, groups: int = 1, strategy: str = "auto",
) -> Tensor:
    """:func:`pedconv_conv2d` in 3-D: ``x`` ``(B, Cin, D, H, W)``, ``weight``
    ``(Cout, Cin/groups, kd, kh, kw)``, ``psi`` ``(B, R, kd*kh*kw)``; the functional form of
    :class:`~pedconv.PEDConv3d`.

    Example:
        >>> import torch
        >>> x, w = torch.randn(2, 4, 3, 6, 6), torch.randn(6, 4, 3, 3, 3)
        >>> pedconv_conv3d(x, w, None, None, torch.rand(2, 1, 4), torch.rand(2, 1, 27), padding=1).shape
        torch.Size([2, 6, 3, 6, 6])
    """
    return _functional(3, x, weight, bias, CPFactors(gamma, phi, psi), stride, padding, dilation, groups, strategy)


def _functional(
    ndim: int, x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors,
    stride: Union[int, Sequence[int]], padding: Union[int, Sequence[int]], dilation: Union[int, Sequence[int]],
    groups: int, strategy: str,
) -> Tensor:
    """The checks and the call shared by ``pedconv_conv1d/2d/3d``."""
    name = f"pedconv_conv{ndim}d"
    if all(c is None for c in factors):
        raise ValueError(f"{name}: at least one of gamma, phi, psi must be given")
    if strategy != "auto" and strategy not in STRATEGIES:
        raise ValueError(f"strategy must be 'auto' or one of {sorted(STRATEGIES)}, got {strategy!r}")
    if x.dim() != ndim + 2 or weight.dim() != ndim + 2:
        raise ValueError(
            f"{name} expects x and weight with {ndim + 2} dimensions, got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    geometry = ConvGeometry.make(stride, padding, dilation, groups, ndim=ndim)
    return run_strategy(x, weight, bias, factors, geometry, strategy)


def run_strategy(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry,
    strategy: str = "auto", exporting: Optional[bool] = None,
) -> Tensor:
    """:func:`pedconv_conv2d` on validated records: what a layer calls on every forward, with its
    geometry built once and ``exporting`` (:func:`is_exporting`) looked up once per forward.

    Example:
        >>> import torch
        >>> x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
        >>> f = CPFactors(torch.rand(2, 1, 6), None, torch.rand(2, 1, 9))
        >>> run_strategy(x, w, None, f, ConvGeometry.make(padding=1), "factored").shape
        torch.Size([2, 6, 8, 8])
    """
    xc, wc, bias, *cast = cast_for_autocast(x, weight, bias, *factors)
    assert xc is not None and wc is not None
    # The base weight is small: a contiguous copy (e.g. of a channels_last weight) lets every
    # strategy reshape it freely.
    wc = wc.contiguous()
    factors = CPFactors(*cast)
    if geometry.ndim == 1:
        # A 1-D convolution is exactly a 2-D one over a single row with a one-row kernel
        # (psi's k taps are then 1 x k): every 2-D strategy serves 1-D layers unchanged.
        y = run_strategy(xc.unsqueeze(-2), wc.unsqueeze(-2), bias, factors, geometry.as_2d(), strategy, exporting)
        return y.squeeze(-2)
    exporting = is_exporting() if exporting is None else exporting
    if exporting and strategy == "triton":
        strategy = "factored"  # kernels cannot be exported: the same convolution in exportable form
    if geometry.ndim == 2 and strategy in ("auto", "factored") and exporting:
        # Tracing/export: the factored strategy's export form (constant conv weights, lean graph);
        # 3-D layers export through factored's own traceable form.
        return export_conv2d(xc, wc, bias, factors, geometry)
    if strategy == "auto":
        strategy = select_strategy(xc, wc, factors, geometry, exporting)
    if strategy == "triton" and torch.compiler.is_compiling():
        return compiled.fused_conv(xc, wc, bias, factors, geometry)  # opaque to the compiler
    if strategy in BATCH_AS_GROUPS and compiled.AVAILABLE and torch.compiler.is_compiling() and xc.shape[0] != 1:
        # torch.compile: the batch-as-groups convolution as one opaque operator (see .compiled),
        # so that the compiled graph does not depend on the batch size.
        return compiled.per_sample_conv(xc, wc, bias, factors, geometry)
    return STRATEGIES[strategy](xc, wc, bias, factors, geometry)
