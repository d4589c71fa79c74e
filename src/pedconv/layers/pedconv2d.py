"""PyTorch Parameter Efficient Dynamic Convolution (PEDConv).

Paper: "Parameter Efficient Dynamic Convolution via Tensor Decomposition",
Zejiang Hou and Sun-Yuan Kung, BMVC 2021.

This file holds the method, equation by equation:

* Eq. (1)-(2): ``W(x) = W_base * sum_r gamma_r(x) (x) phi_r(x) (x) psi_r(x)``, a Hadamard
  product with a rank-R CP tensor over (output channels, input channels, kernel taps).
* Eq. (7): the generator, global average pooling -> Linear(Cin -> Cin/r) -> ReLU -> heads.
* Eq. (5): the heads give the mean (and optionally the std) of a Gaussian; training samples
  ``g = mu + sigma * eps``, evaluation uses ``g = mu``.
* Eq. (6): the info-max decoder reconstructs the (detached) pooled input from ``g``.

How the per-sample convolution of Eq. (3) is executed fast lives in
:mod:`pedconv.ops.dynamic_conv`.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.common_types import _size_2_t

from ..ops import STRATEGIES, compose_weight, dynamic_conv2d

__all__ = [
    "ACTIVATIONS",
    "COMPONENTS",
    "ComponentGenerator",
    "PEDConv2d",
]

COMPONENTS: tuple[str, str, str] = ("gamma", "phi", "psi")
"""Component names in the order of ``g = [gamma; phi; psi]`` (Sec. 3)."""

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


def _scaled_sigmoid(z: Tensor) -> Tensor:
    return 2.0 * torch.sigmoid(z)


def _one_plus_tanh(z: Tensor) -> Tensor:
    return 1.0 + torch.tanh(z)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "scaled_sigmoid": _scaled_sigmoid,
    "sigmoid": torch.sigmoid,
    "one_plus_tanh": _one_plus_tanh,
    "exp": torch.exp,
}
"""Maps the sampled pre-activation ``g`` to a component value.

``"sigmoid"`` is the authors' choice (components start at 0.5). The default
``"scaled_sigmoid"`` (``2 * sigmoid``) has the same shape but starts at exactly 1 with
zero-initialised heads, so a converted layer reproduces its static convolution without
rescaling ``W_base`` (see the README for the measured effect).
"""

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_SigmaT = Union[float, str]


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _pair_of_ints(name: str, value: _size_2_t, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair  # type: ignore[return-value]


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
            raise ValueError(
                f"components must name gamma/output, phi/input or psi/kernel, got {item!r}"
            )
        names.add(_COMPONENT_ALIASES[item])
    if not names:
        raise ValueError("components must be a non-empty subset of ('gamma', 'phi', 'psi')")
    return tuple(c for c in COMPONENTS if c in names)


class ComponentGenerator(nn.Module):
    """The bottleneck MLP of Eq. (7): ``Linear(Cin -> hidden) -> ReLU -> head``.

    The head outputs the Gaussian mean ``mu`` of every enabled component for every rank,
    laid out ``[gamma (R*Cout) | phi (R*Cin/groups) | psi (R*kh*kw)]``, followed by the
    same layout again for the std pre-activation when ``learn_sigma`` is set.
    Applied to the last dimension, so it serves both the pooled vector (``(B, Cin)``)
    and per-pixel vectors.

    Args:
        in_features: ``Cin``.
        hidden: bottleneck width ``Cin / r``.
        out_features: length of ``mu``.
        learn_sigma: also output a std pre-activation (``softplus`` gives ``sigma``).
        sigma_init: initial ``sigma`` when learned.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        learn_sigma: bool = False,
        sigma_init: float = 0.1,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.out_features = out_features
        self.learn_sigma = learn_sigma
        self.sigma_init = sigma_init
        self.fc_share = nn.Linear(in_features, hidden, **dd)
        self.head = nn.Linear(hidden, out_features * (2 if learn_sigma else 1), **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc_share.reset_parameters()
        # Zero heads: every component starts at activation(0) for every input, which is
        # what makes conversion of a trained static conv exact (see PEDConv2d.from_conv).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if self.learn_sigma:
            with torch.no_grad():
                self.head.bias[self.out_features :].fill_(_softplus_inverse(self.sigma_init))

    def forward(self, pooled: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """Return ``(mu, sigma)``; ``sigma`` is ``None`` unless learned."""
        # F.linear on the submodules' parameters: same math, without two Module calls'
        # dispatch overhead on every forward (it shows at batch 1).
        hidden = F.relu(F.linear(pooled, self.fc_share.weight, self.fc_share.bias))
        out = F.linear(hidden, self.head.weight, self.head.bias)
        if not self.learn_sigma:
            return out, None
        mu, rho = out.split(self.out_features, dim=-1)
        return mu, F.softplus(rho)


class PEDConv2d(nn.Module):
    r"""Drop-in replacement for :class:`torch.nn.Conv2d` with an input-dependent weight.

    For each sample, ``W(x) = W_base * sum_r gamma_r(x) (x) phi_r(x) (x) psi_r(x)``
    (Eq. 2), with ``gamma`` over output channels, ``phi`` over the ``Cin/groups`` input
    channels of a filter and ``psi`` over the ``kh*kw`` kernel taps. The components come
    from a small generator on the globally pooled input (Eq. 7). In training they are
    sampled from a Gaussian (Eq. 5) and an info-max decoder reconstructs the pooled input
    from them (Eq. 6); read that loss with :func:`pedconv.infomax_loss`.

    The positional arguments, output shape, ``weight`` (``W_base``) and ``bias`` are
    exactly those of ``nn.Conv2d``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
        padding_mode, device, dtype: as in :class:`torch.nn.Conv2d`.
        rank: CP rank ``R`` of the perturbation tensor (Table 5b).
        components: non-empty subset of ``"gamma"``/``"output"``, ``"phi"``/``"input"``,
            ``"psi"``/``"kernel"`` (Table 5a). Disabled components are all ones.
        reduction: ``r`` of the bottleneck, ``hidden = max(min_hidden, Cin // r)`` (Eq. 7).
        min_hidden: smallest bottleneck width, for layers with few channels.
        variational: sample ``g = mu + sigma * eps`` in training (Eq. 5); ``False`` gives
            the deterministic generator of Table 5a.
        sigma: a fixed std on the pre-activation (the authors' code uses 0.1), or
            ``"learned"`` for a std predicted by the generator per component entry.
        infomax: build the info-max decoder and record its loss in training (Eq. 6).
        activation: a key of :data:`ACTIVATIONS`, applied after sampling.
        strategy: execution strategy (see :mod:`pedconv.ops`), ``"auto"`` by default.

    Example:
        >>> import torch
        >>> conv = PEDConv2d(16, 32, 3, padding=1)
        >>> conv(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: Union[str, _size_2_t] = 0,
        dilation: _size_2_t = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        rank: int = 1,
        components: Union[str, Iterable[str]] = COMPONENTS,
        reduction: int = 16,
        min_hidden: int = 4,
        variational: bool = True,
        sigma: _SigmaT = 0.1,
        infomax: bool = True,
        activation: str = "scaled_sigmoid",
        strategy: str = "auto",
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.groups = _positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        self.kernel_size = _pair_of_ints("kernel_size", kernel_size, 1)
        self.stride = _pair_of_ints("stride", stride, 1)
        self.dilation = _pair_of_ints("dilation", dilation, 1)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.padding: Union[str, tuple[int, int]]
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _pair_of_ints("padding", padding, 0)

        self.rank = _positive_int("rank", rank)
        self.component_names = _normalise_components(components)
        self.reduction = _positive_int("reduction", reduction)
        self.min_hidden = _positive_int("min_hidden", min_hidden)
        if not isinstance(variational, bool):
            raise TypeError(f"variational must be a bool, got {variational!r}")
        self.variational = variational
        if isinstance(sigma, str):
            if sigma != "learned":
                raise ValueError(f"sigma must be a float >= 0 or 'learned', got {sigma!r}")
            if not variational:
                raise ValueError("sigma='learned' needs variational=True")
        elif not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or sigma < 0:
            raise ValueError(f"sigma must be a float >= 0 or 'learned', got {sigma!r}")
        self.sigma: _SigmaT = sigma if isinstance(sigma, str) else float(sigma)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        if strategy != "auto" and strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be 'auto' or one of {sorted(STRATEGIES)}, got {strategy!r}"
            )
        self.strategy = strategy
        if not isinstance(infomax, bool):
            raise TypeError(f"infomax must be a bool, got {infomax!r}")
        self.infomax = infomax
        if self.rank > 1 and (not variational or self.sigma == 0):
            warnings.warn(
                "PEDConv2d: rank > 1 without sampling noise starts all rank terms equal "
                "(zero-initialised heads), and identical terms receive identical gradients; "
                "use variational=True with sigma > 0 to break the symmetry",
                stacklevel=2,
            )

        self._pad_lrtb, self._conv_padding = self._resolve_padding()
        kh, kw = self.kernel_size
        self._sizes = {
            "gamma": self.out_channels,
            "phi": self.in_channels // self.groups,
            "psi": kh * kw,
        }
        self.hidden = max(self.min_hidden, self.in_channels // self.reduction)
        g_features = self.rank * sum(self._sizes[c] for c in self.component_names)

        self.weight = nn.Parameter(
            torch.empty(self.out_channels, self.in_channels // self.groups, kh, kw, **dd)
        )
        self.bias: Optional[nn.Parameter]
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, **dd))
        else:
            self.register_parameter("bias", None)
        self.generator = ComponentGenerator(
            self.in_channels,
            self.hidden,
            g_features,
            learn_sigma=self.sigma == "learned",
            **dd,
        )
        self.decoder: Optional[nn.Sequential] = None
        if infomax:
            # Eq. (6): p(x | g) as a two-layer MLP with ReLU, training only.
            self.decoder = nn.Sequential(
                nn.Linear(g_features, self.hidden, **dd),
                nn.ReLU(inplace=True),
                nn.Linear(self.hidden, self.in_channels, **dd),
            )
        self.last_infomax_loss: Optional[Tensor] = None
        self.reset_parameters()

    # ------------------------------------------------------------------ construction
    def reset_parameters(self) -> None:
        """Initialise ``weight``/``bias`` as ``nn.Conv2d`` does and the heads to zero."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        self.generator.reset_parameters()
        if self.decoder is not None:
            for m in self.decoder:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()

    def _resolve_padding(self) -> tuple[Optional[tuple[int, int, int, int]], tuple[int, int]]:
        """Split padding into an explicit ``F.pad`` (or None) and the conv's own padding.

        Mirrors ``nn.Conv2d``: ``'same'`` puts ``total // 2`` before and the rest after,
        and non-zero modes pad explicitly before a zero-padding convolution.
        """
        if self.padding == "valid":
            before_after = [(0, 0), (0, 0)]
        elif self.padding == "same":
            before_after = []
            for d, k in zip(self.dilation, self.kernel_size):
                total = d * (k - 1)
                before_after.append((total // 2, total - total // 2))
        else:
            before_after = [(p, p) for p in self.padding]  # type: ignore[union-attr]
        (top, bottom), (left, right) = before_after
        symmetric = top == bottom and left == right
        if self.padding_mode == "zeros" and symmetric:
            return None, (top, left)
        return (left, right, top, bottom), (0, 0)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, *, preserve_function: bool = True, **options: object
    ) -> "PEDConv2d":
        """Build a PEDConv2d that starts from ``conv``'s weight and bias.

        With ``preserve_function`` (default), ``W_base`` is ``conv.weight`` divided by
        the value of the CP tensor at initialisation (``R * activation(0) ** n_components``,
        which is 1 for the default activation at rank 1), so in eval mode the new layer
        computes exactly what ``conv`` computed until it is trained. With ``False``,
        ``W_base`` is a plain copy (the authors' from-scratch setting).

        Args:
            conv: an ``nn.Conv2d`` (exact type; subclasses may change the forward pass).
            preserve_function: fold the initial CP value into ``W_base``.
            **options: keyword options of :class:`PEDConv2d` (``rank``, ``components``...).

        Example:
            >>> import torch, torch.nn as nn
            >>> conv = nn.Conv2d(8, 8, 3, padding=1).eval()
            >>> ped = PEDConv2d.from_conv(conv).eval()
            >>> x = torch.randn(1, 8, 5, 5)
            >>> torch.allclose(ped(x), conv(x), atol=1e-6)
            True
        """
        if type(conv) is not nn.Conv2d:
            raise TypeError(
                f"from_conv expects an nn.Conv2d (exact type), got {type(conv).__name__}; "
                "subclasses such as timm's Conv2dSame change the forward pass"
            )
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **options,  # type: ignore[arg-type]
        )
        with torch.no_grad():
            scale = layer.initial_cp_value() if preserve_function else 1.0
            layer.weight.copy_(conv.weight / scale)
            if conv.bias is not None:
                assert layer.bias is not None
                layer.bias.copy_(conv.bias)
        layer.train(conv.training)
        return layer

    def initial_cp_value(self) -> float:
        """Every entry of ``sum_r gamma_r (x) phi_r (x) psi_r`` right after initialisation."""
        a0 = float(ACTIVATIONS[self.activation](torch.zeros(())))
        return self.rank * a0 ** len(self.component_names)

    def remove_decoder(self) -> None:
        """Drop the info-max decoder (training only) for deployment."""
        self.decoder = None
        self.infomax = False
        self.last_infomax_loss = None

    # ------------------------------------------------------------------ the method
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"PEDConv2d expects a Tensor input, got {type(x).__name__}")
        ndim = x.dim()
        if ndim != 4 and ndim != 3:
            raise ValueError(
                f"PEDConv2d expects input of shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}"
            )
        if x.shape[-3] != self.in_channels:
            raise ValueError(
                f"PEDConv2d expects input with in_channels={self.in_channels} channels, "
                f"got {x.shape[-3]} (input shape {tuple(x.shape)})"
            )

    def _sample(self, features: Tensor, sample: bool) -> tuple[Tensor, Tensor]:
        """Generator on ``features`` (last dim Cin): the pre-activation ``g`` (sampled in
        training, Eq. 5) and the component values ``activation(g)``."""
        mu, sigma = self.generator(features)
        g = mu
        if sample and self.variational:
            std: Union[Tensor, float] = sigma if sigma is not None else self.sigma  # type: ignore[assignment]
            g = mu + std * torch.randn_like(mu)  # Eq. (5): reparameterisation trick
        return g, ACTIVATIONS[self.activation](g)

    def _record_infomax(self, g: Tensor, target: Tensor) -> None:
        """Eq. (6): in training, the MSE of the decoder's reconstruction of the (detached)
        generator input from ``g``; ``None`` otherwise."""
        self.last_infomax_loss = None
        if self.training and self.decoder is not None:
            recon = self.decoder(g)
            # At least float32 for the loss, also under bf16/fp16 autocast.
            dt = torch.promote_types(recon.dtype, torch.float32)
            self.last_infomax_loss = F.mse_loss(recon.to(dt), target.detach().to(dt))

    def _generate(
        self, x: Tensor, sample: bool
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Components after activation, the sampled pre-activation ``g``, and the GAP input."""
        pooled = x.mean(dim=(2, 3))  # Eq. (7): global average pooling
        g, values = self._sample(pooled, sample)
        parts = values.split([self.rank * self._sizes[c] for c in self.component_names], dim=1)
        comps = {
            c: p.reshape(g.shape[0], self.rank, self._sizes[c])
            for c, p in zip(self.component_names, parts)
        }
        return comps, g, pooled

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        comps, g, pooled = self._generate(x, sample=self.training)
        self._record_infomax(g, pooled)
        if self._pad_lrtb is not None:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._pad_lrtb, mode=mode)
        y = dynamic_conv2d(
            x,
            self.weight,
            self.bias,
            comps.get("gamma"),
            comps.get("phi"),
            comps.get("psi"),
            self.stride,
            self._conv_padding,
            self.dilation,
            self.groups,
            self.strategy,
        )
        return y.squeeze(0) if unbatched else y

    # ------------------------------------------------------------------ introspection
    @torch.no_grad()
    def components(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The eval-mode components ``(gamma, phi, psi)`` for input ``x``.

        Shapes ``(B, R, Cout)``, ``(B, R, Cin/groups)`` and ``(B, R, kh*kw)``; a disabled
        component is all ones. These are the values the convolution uses in eval mode
        (the Gaussian mean, no sampling), whatever the module's training flag.
        """
        self._check_input(x)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        comps, _, _ = self._generate(x, sample=False)
        return tuple(  # type: ignore[return-value]
            comps[c] if c in comps else x.new_ones(x.shape[0], self.rank, self._sizes[c])
            for c in COMPONENTS
        )

    @torch.no_grad()
    def dynamic_weight(self, x: Tensor) -> Tensor:
        """The per-sample weights of Eq. (2), ``(B, Cout, Cin/groups, kh, kw)``, in eval mode."""
        gamma, phi, psi = self.components(x)
        return compose_weight(self.weight, gamma, phi, psi)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
            f", stride={self.stride}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        s += f", rank={self.rank}, components={self.component_names}, hidden={self.hidden}"
        s += f", variational={self.variational}, sigma={self.sigma}, infomax={self.infomax}"
        s += f", activation={self.activation}"
        if self.strategy != "auto":
            s += f", strategy={self.strategy}"
        return s

    def __getstate__(self) -> dict:
        # The recorded info-max loss is a graph node: neither picklable nor deep-copyable.
        state = super().__getstate__().copy()
        state["last_infomax_loss"] = None
        return state
