"""What every PEDConv layer shares: ``nn.ConvNd``'s signature, the method's options, the
base weight, the generator of Eq. (7), the sampling of Eq. (5) and the decoder of Eq. (6).

:class:`PEDConvBase` leaves two things to its subclasses: what the generator reads (the
globally pooled input for :class:`~pedconv.PEDConv2d` and its 1-D/3-D siblings, each pixel's
channel vector for :class:`~pedconv.SpatialPEDConv2d`) and how the convolution is executed.
The number of spatial dimensions is the class attribute ``ndim`` (2 unless a subclass says so).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, TypeVar, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..execution._torch_specific import is_exporting
from ..execution.geometry import CONV_FUNCTIONS, conv_output_size
from .cp import COMPONENTS
from .generator import ACTIVATIONS, ComponentGenerator, sample_g
from .infomax import InfomaxDecoder

__all__ = ["PADDING_MODES", "PEDConvBase", "PEDConvOptions", "SigmaT", "SizeT"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
SigmaT = Union[float, str]
"""``sigma``: a fixed std (float >= 0) or ``"learned"``."""
SizeT = Union[int, tuple[int, ...]]
"""A size argument: one int for every spatial dimension, or one int per dimension."""
_SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}

_COMPONENT_ALIASES = {
    "gamma": "gamma",
    "output": "gamma",
    "out": "gamma",
    "phi": "phi",
    "input": "phi",
    "in": "phi",
    "psi": "psi",
    "kernel": "psi",
}

_Layer = TypeVar("_Layer", bound="PEDConvBase")


def _ints(name: str, value: SizeT, minimum: int, n: int) -> tuple[int, ...]:
    """``value`` as ``n`` ints >= ``minimum`` (an int repeats), as ``nn.Conv{n}d`` accepts it."""
    items = (value,) * n if isinstance(value, int) else tuple(value)
    if len(items) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        what = "a pair of ints" if n == 2 else f"a tuple of {n} ints"
        raise TypeError(f"{name} must be an int or {what}, got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return items


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _normalise_components(components: Union[str, Iterable[str]]) -> tuple[str, ...]:
    items = [components] if isinstance(components, str) else list(components)
    names = set()
    for item in items:
        if item not in _COMPONENT_ALIASES:
            raise ValueError(f"components must name gamma/output, phi/input or psi/kernel, got {item!r}")
        names.add(_COMPONENT_ALIASES[item])
    if not names:
        raise ValueError("components must be a non-empty subset of ('gamma', 'phi', 'psi')")
    return tuple(c for c in COMPONENTS if c in names)


def _check_sigma(sigma: SigmaT, variational: bool) -> SigmaT:
    if isinstance(sigma, str):
        if sigma != "learned":
            raise ValueError(f"sigma must be a float >= 0 or 'learned', got {sigma!r}")
        if not variational:
            raise ValueError("sigma='learned' needs variational=True")
        return sigma
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not 0 <= sigma < math.inf:
        raise ValueError(f"sigma must be a finite float >= 0 or 'learned', got {sigma!r}")
    return float(sigma)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


@dataclass(frozen=True)
class PEDConvOptions:
    """The method's options, validated on construction (see :class:`~pedconv.PEDConv2d`).

    Example:
        >>> PEDConvOptions(components=("kernel", "output")).components
        ('gamma', 'psi')
    """

    rank: int = 1
    components: Union[str, Iterable[str]] = COMPONENTS
    reduction: int = 16
    min_hidden: int = 4
    variational: bool = True
    sigma: SigmaT = 0.1
    infomax: bool = True
    activation: str = "scaled_sigmoid"

    def __post_init__(self) -> None:
        checked = dict(
            rank=_positive_int("rank", self.rank),
            components=_normalise_components(self.components),
            reduction=_positive_int("reduction", self.reduction),
            min_hidden=_positive_int("min_hidden", self.min_hidden),
            variational=_check_bool("variational", self.variational),
            sigma=_check_sigma(self.sigma, self.variational),
            infomax=_check_bool("infomax", self.infomax),
        )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)


class PEDConvBase(nn.Module):
    """Shared construction and Eq. (5)-(7) of the PEDConv layers (not used directly).

    Takes ``nn.ConvNd``'s arguments and the method's :class:`PEDConvOptions`; the layers
    expose both as a drop-in ``nn.Conv1d/2d/3d`` signature (see :class:`~pedconv.PEDConv2d`).
    """

    ndim: ClassVar[int] = 2
    """The number of spatial dimensions (1, 2 or 3)."""
    weight: nn.Parameter
    bias: Optional[nn.Parameter]
    decoder: Optional[InfomaxDecoder]
    padding: Union[str, tuple[int, ...]]
    sigma: SigmaT

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: SizeT, stride: SizeT,
        padding: Union[str, SizeT], dilation: SizeT, groups: int, bias: bool, padding_mode: str,
        options: PEDConvOptions, device: Optional[Union[torch.device, str]] = None, dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self._set_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode)
        self._set_options(options)
        self._build(bias, device, dtype)
        self.last_infomax_loss: Optional[Tensor] = None
        self.reset_parameters()

    # ------------------------------------------------------------------ construction
    def _set_geometry(
        self, in_channels: int, out_channels: int, kernel_size: SizeT, stride: SizeT,
        padding: Union[str, SizeT], dilation: SizeT, groups: int, padding_mode: str,
    ) -> None:
        n = self.ndim
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.groups = _positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        self.kernel_size = _ints("kernel_size", kernel_size, 1, n)
        self.stride = _ints("stride", stride, 1, n)
        self.dilation = _ints("dilation", dilation, 1, n)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _ints("padding", padding, 0, n)
        self._explicit_pad, self._conv_padding = self._resolve_padding()

    def _set_options(self, options: PEDConvOptions) -> None:
        self.rank, self.reduction, self.min_hidden = options.rank, options.reduction, options.min_hidden
        self.components: tuple[str, ...] = tuple(options.components)
        self.variational, self.sigma, self.infomax = options.variational, options.sigma, options.infomax
        self.activation = options.activation
        if self.rank > 1 and (not self.variational or self.sigma == 0):
            warnings.warn(
                f"{type(self).__name__}: rank > 1 without sampling noise starts all rank terms equal "
                "(zero-initialised heads), and identical terms receive identical gradients; "
                "use variational=True with sigma > 0 to break the symmetry",
                stacklevel=4,
            )

    def _build(self, bias: bool, device: Optional[Union[torch.device, str]], dtype: Optional[torch.dtype]) -> None:
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        taps = math.prod(self.kernel_size)
        self.factor_sizes = {"gamma": self.out_channels, "phi": self.in_channels // self.groups, "psi": taps}
        self.hidden = max(self.min_hidden, self.in_channels // self.reduction)
        g_features = self.rank * sum(self.factor_sizes[c] for c in self.components)
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size,
                                               **dd))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, **dd))
        else:
            self.register_parameter("bias", None)
        self.generator = ComponentGenerator(
            self.in_channels, self.hidden, g_features, learn_sigma=self.sigma == "learned", **dd
        )
        # Eq. (6): p(x | g), training only.
        self.decoder = InfomaxDecoder(g_features, self.hidden, self.in_channels, **dd) if self.infomax else None

    def reset_parameters(self) -> None:
        """Initialise ``weight``/``bias`` as ``nn.Conv2d`` does and the heads to zero."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self.generator.reset_parameters()
        if self.decoder is not None:
            self.decoder.reset_parameters()

    def _resolve_padding(self) -> tuple[Optional[tuple[int, ...]], tuple[int, ...]]:
        """Split padding into an explicit ``F.pad`` (or None) and the conv's own padding.

        Mirrors ``nn.ConvNd``: ``'same'`` puts ``total // 2`` before and the rest after,
        and non-zero modes pad explicitly before a zero-padding convolution. The explicit
        padding is in ``F.pad``'s order (last dimension first).
        """
        if self.padding == "valid":
            before_after = [(0, 0)] * self.ndim
        elif self.padding == "same":
            before_after = []
            for d, k in zip(self.dilation, self.kernel_size):
                total = d * (k - 1)
                before_after.append((total // 2, total - total // 2))
        else:
            before_after = [(p, p) for p in self.padding if isinstance(p, int)]
        if self.padding_mode == "zeros" and all(a == b for a, b in before_after):
            return None, tuple(a for a, _ in before_after)
        return tuple(v for pair in reversed(before_after) for v in pair), (0,) * self.ndim

    def pad_input(self, x: Tensor) -> Tensor:
        """``x`` with the padding that the convolution itself does not apply (non-zero
        modes, asymmetric ``'same'``); unchanged when there is none."""
        if self._explicit_pad is None:
            return x
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, self._explicit_pad, mode=mode)

    def _load_conv(self: _Layer, conv: nn.Module, preserve_function: bool, copy_weight: bool = True) -> _Layer:
        """Copy ``conv``'s weight (divided by the initial CP value when preserving its
        function) and bias; take its training flag."""
        assert isinstance(conv.weight, Tensor)
        with torch.no_grad():
            if copy_weight:
                scale = self.initial_cp_value() if preserve_function else 1.0
                self.weight.copy_(conv.weight / scale)
            if isinstance(conv.bias, Tensor):
                assert self.bias is not None
                self.bias.copy_(conv.bias)
        self.train(conv.training)
        return self

    def initial_cp_value(self) -> float:
        """Every entry of ``sum_r gamma_r (x) phi_r (x) psi_r`` right after initialisation."""
        # a constant, computed on the CPU: the default device may be "meta" (deferred initialisation)
        a0 = float(ACTIVATIONS[self.activation](torch.zeros((), device="cpu")))
        return self.rank * a0 ** len(self.components)

    def remove_decoder(self) -> None:
        """Drop the info-max decoder (training only) for deployment."""
        self.decoder = None
        self.infomax = False
        self.last_infomax_loss = None

    # ------------------------------------------------------------------ the method
    def _batched(self, x: Tensor) -> tuple[Tensor, bool, bool]:
        """``x`` as ``(B, C, *spatial)`` after checking it as ``nn.ConvNd`` would, whether it came
        unbatched, and whether a trace/export is running (looked up once per forward). Shape
        values are not checked while tracing/exporting (the graph must not bake them in)."""
        name, n = type(self).__name__, self.ndim
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a Tensor input, got {type(x).__name__}")
        if x.dim() not in (n + 1, n + 2):
            raise ValueError(
                f"{name} expects input of shape (B, C, {_SPATIAL_NAMES[n]}) or (C, {_SPATIAL_NAMES[n]}), "
                f"got {tuple(x.shape)}"
            )
        exporting = is_exporting()
        if not exporting:
            if x.shape[-n - 1] != self.in_channels:
                raise ValueError(
                    f"{name} expects input with in_channels={self.in_channels} channels, "
                    f"got {x.shape[-n - 1]} (input shape {tuple(x.shape)})"
                )
            if min(self.output_size(x)) < 1:
                raise ValueError(
                    f"{name}: input of spatial size {tuple(x.shape[-n:])} with padding {self.padding} is smaller "
                    f"than the kernel {self.kernel_size} at dilation {self.dilation} (nn.Conv{n}d refuses it too)"
                )
        return (x.unsqueeze(0), True, exporting) if x.dim() == n + 1 else (x, False, exporting)

    def output_size(self, x: Tensor) -> tuple[int, ...]:
        """The spatial output size for input ``x``, as ``nn.ConvNd`` computes it."""
        n = self.ndim
        explicit = self._explicit_pad or (0,) * (2 * n)
        # F.pad's order is last dimension first: dimension i's pair sits at 2 * (n - 1 - i).
        size = [
            s + explicit[2 * (n - 1 - i)] + explicit[2 * (n - 1 - i) + 1] + 2 * p
            for i, (s, p) in enumerate(zip(x.shape[-n:], self._conv_padding))
        ]
        return conv_output_size(size, self.kernel_size, self.stride, (0,) * n, self.dilation)

    def _empty_batch_output(self, x: Tensor, exporting: bool) -> Optional[Tensor]:
        """For an empty batch, what ``nn.Conv2d`` returns (an empty output; a zero info-max
        loss in training); ``None`` for any other batch (and while exporting)."""
        if exporting or x.shape[0] != 0:
            return None
        recording = self.training and self.decoder is not None
        self.last_infomax_loss = x.new_zeros((), dtype=torch.float32) if recording else None
        return CONV_FUNCTIONS[self.ndim](self.pad_input(x), self.weight, self.bias, self.stride, self._conv_padding,
                                         self.dilation, self.groups)

    def _sample(self, features: Tensor, sample: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. (7) on ``features`` (last dim Cin), then Eq. (5): the pre-activation ``g``
        (sampled when ``sample``) and each enabled component's values, split along the
        last dimension as ``(..., R * size)``."""
        mu, learned_sigma = self.generator(features)
        sigma: Union[Tensor, float, None] = learned_sigma if learned_sigma is not None else self.sigma  # type: ignore[assignment]
        g = sample_g(mu, sigma, sample and self.variational)
        values = ACTIVATIONS[self.activation](g)
        parts = values.split([self.rank * self.factor_sizes[c] for c in self.components], dim=-1)
        return g, dict(zip(self.components, parts))

    def _record_infomax(self, g: Tensor, target: Tensor) -> None:
        """Eq. (6): in training, the decoder's reconstruction MSE of the (detached) generator
        input from ``g``; ``None`` otherwise."""
        self.last_infomax_loss = None
        if self.training and self.decoder is not None:
            self.last_infomax_loss = self.decoder.mse(g, target)

    def _all_factors(self, comps: dict[str, Tensor], ones: Callable[[int], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``(gamma, phi, psi)`` with the disabled components as ``ones(size)``."""
        return tuple(comps[c] if c in comps else ones(self.factor_sizes[c]) for c in COMPONENTS)  # type: ignore[return-value]

    # ------------------------------------------------------------------ cost
    def _weight_elements(self) -> int:
        return self.weight.numel()

    def macs(self, output_shape: Sequence[int], measured: Callable[[nn.Module], int]) -> int:
        """Multiply-adds of one forward pass by the paper's convention (Sec. 3).

        Args:
            output_shape: the layer's output shape (batch included).
            measured: the multiply-adds that a counter (``FlopCounterMode``) measured
                inside a submodule of this layer.
        """
        raise NotImplementedError

    def static_macs(self, output_shape: Sequence[int]) -> int:
        """Multiply-adds of a static convolution with this layer's base weight."""
        batch = output_shape[0] if len(output_shape) == self.ndim + 2 else 1
        return batch * math.prod(output_shape[-self.ndim :]) * self._weight_elements()

    # ------------------------------------------------------------------ repr / pickling
    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.ndim:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.ndim:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        s += f", rank={self.rank}, components={self.components}, hidden={self.hidden}"
        s += f", variational={self.variational}, sigma={self.sigma}, infomax={self.infomax}"
        return s + f", activation={self.activation}"

    def __getstate__(self) -> dict[str, Any]:
        # The recorded info-max loss is a graph node: neither picklable nor deep-copyable.
        state = super().__getstate__().copy()
        state["last_infomax_loss"] = None
        return state
