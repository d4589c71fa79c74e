"""PyTorch Parameter Efficient Dynamic Convolution (PEDConv).

Paper: "Parameter Efficient Dynamic Convolution via Tensor Decomposition",
Zejiang Hou and Sun-Yuan Kung, BMVC 2021.

The method, equation by equation, in this package:

* Eq. (1)-(2): :mod:`pedconv.method.cp` -- ``W(x) = W_base * sum_r gamma_r(x) (x) phi_r(x)
  (x) psi_r(x)``, a Hadamard product with a rank-R CP tensor over (output channels, input
  channels, kernel taps).
* Eq. (5), (7): :mod:`pedconv.method.generator` -- global average pooling -> Linear(Cin ->
  Cin/r) -> ReLU -> heads give the mean (and optionally the std) of a Gaussian; training
  samples ``g = mu + sigma * eps``, evaluation uses ``g = mu``.
* Eq. (6): :mod:`pedconv.method.infomax` -- the decoder reconstructs the (detached)
  pooled input from ``g``.

This file puts them together as drop-in ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d``: one
implementation (:class:`PEDConvNd`) for every number of spatial dimensions, ``psi`` running
over the kernel taps of any dimension. How the per-sample convolution of Eq. (3) is executed
fast lives in :mod:`pedconv.execution`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..execution.dispatch import STRATEGIES, run_strategy
from ..execution.geometry import ConvGeometry, conv_arguments
from .base import PEDConvBase, PEDConvOptions, SigmaT, SizeT
from .cp import COMPONENTS, CPFactors, compose_weight

__all__ = ["PEDConv1d", "PEDConv2d", "PEDConv3d", "PEDConvNd"]


class PEDConvNd(PEDConvBase):
    r"""PEDConv over ``ndim`` spatial dimensions: the one implementation behind :class:`PEDConv1d`,
    :class:`PEDConv2d` and :class:`PEDConv3d` (use those; they only set ``ndim``).

    Drop-in replacement for :class:`torch.nn.Conv2d` (``nn.Conv1d``, ``nn.Conv3d``) with an
    input-dependent weight.

    For each sample, ``W(x) = W_base * sum_r gamma_r(x) (x) phi_r(x) (x) psi_r(x)``
    (Eq. 2), with ``gamma`` over output channels, ``phi`` over the ``Cin/groups`` input
    channels of a filter and ``psi`` over the kernel taps (``kh*kw`` in 2-D, ``k`` in 1-D,
    ``kd*kh*kw`` in 3-D). The components come
    from a small generator on the globally pooled input (Eq. 7). In training they are
    sampled from a Gaussian (Eq. 5) and an info-max decoder reconstructs the pooled input
    from them (Eq. 6); read that loss with :func:`pedconv.infomax_loss`.

    The positional arguments, output shape, ``weight`` (``W_base``) and ``bias`` are
    exactly those of ``nn.Conv2d``.

    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``bias``, ``padding_mode``, ``device``, ``dtype``: as in :class:`torch.nn.Conv2d`.

    Args:
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
        strategy: execution strategy (a key of :data:`pedconv.STRATEGIES`), ``"auto"`` by default.

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
        kernel_size: SizeT,
        stride: SizeT = 1,
        padding: Union[str, SizeT] = 0,
        dilation: SizeT = 1,
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
        sigma: SigmaT = 0.1,
        infomax: bool = True,
        activation: str = "scaled_sigmoid",
        strategy: str = "auto",
    ) -> None:
        if strategy != "auto" and strategy not in STRATEGIES:
            raise ValueError(f"strategy must be 'auto' or one of {sorted(STRATEGIES)}, got {strategy!r}")
        options = PEDConvOptions(rank, components, reduction, min_hidden, variational, sigma, infomax, activation)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, options,
            device, dtype,
        )
        self.strategy = strategy
        # Built once: the execution's view of stride, the conv's own padding, dilation, groups.
        self._geometry = ConvGeometry(self.stride, self._conv_padding, self.dilation, self.groups)

    @classmethod
    def from_conv(cls, conv: nn.Module, *, preserve_function: bool = True, **options: object) -> PEDConvNd:
        """Build a layer that starts from ``conv``'s weight and bias (``nn.Conv{ndim}d``).

        With ``preserve_function`` (default), ``W_base`` is ``conv.weight`` divided by
        the value of the CP tensor at initialisation (``R * activation(0) ** n_components``,
        which is 1 for the default activation at rank 1), so in eval mode the new layer
        computes exactly what ``conv`` computed until it is trained. With ``False``,
        ``W_base`` is a plain copy (the authors' from-scratch setting).

        Args:
            conv: an ``nn.Conv2d`` for :class:`PEDConv2d` (``nn.Conv1d``/``nn.Conv3d`` for the
                1-D/3-D layers; exact type: subclasses may change the forward pass).
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
        layer = cls(**conv_arguments(conv, cls.__name__, ndim=cls.ndim), **options)  # type: ignore[arg-type]
        return layer._load_conv(conv, preserve_function)

    # ------------------------------------------------------------------ the method
    def _generate(self, x: Tensor, sample: bool, exporting: bool = False) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Components ``(B, R, size)`` after activation, the sampled ``g``, and the GAP input."""
        # Eq. (7): global average pooling, as a sum then a scale: the sum's backward is a
        # broadcast view, where the mean's would write an input-sized tensor per layer.
        # Traced graphs keep the mean (one node, no shape arithmetic).
        # Without a gradient to x (inference), the mean is one op instead of two.
        dims = tuple(range(2, x.dim()))
        if exporting or not (x.requires_grad and torch.is_grad_enabled()):
            pooled = x.mean(dim=dims)
        else:
            pooled = x.sum(dim=dims) * (1.0 / math.prod(x.shape[2:]))
        g, parts = self._sample(pooled, sample)
        # Exporting: -1 for the batch, so that the graph does not read the input's shape.
        batch = -1 if exporting else g.shape[0]
        comps = {c: p.reshape(batch, self.rank, self.factor_sizes[c]) for c, p in parts.items()}
        return comps, g, pooled

    def forward(self, x: Tensor) -> Tensor:
        x, unbatched, exporting = self._batched(x)
        empty = self._empty_batch_output(x, exporting)
        if empty is not None:
            return empty
        comps, g, pooled = self._generate(x, sample=self.training, exporting=exporting)
        self._record_infomax(g, pooled)
        factors = CPFactors(comps.get("gamma"), comps.get("phi"), comps.get("psi"))
        y = run_strategy(self.pad_input(x), self.weight, self.bias, factors, self._geometry, self.strategy, exporting)
        return y.squeeze(0) if unbatched else y

    # ------------------------------------------------------------------ introspection
    @torch.no_grad()
    def cp_factors(self, x: Tensor) -> CPFactors:
        """The eval-mode factors ``(gamma, phi, psi)`` of Eq. (2) for input ``x``.

        Shapes ``(B, R, Cout)``, ``(B, R, Cin/groups)`` and ``(B, R, taps)`` (``taps`` = the
        kernel's element count, ``kh*kw`` in 2-D); a disabled
        component is all ones. These are the values the convolution uses in eval mode
        (the Gaussian mean, no sampling), whatever the module's training flag.

        Example:
            >>> layer = PEDConv2d(8, 16, 3, components=("gamma", "psi"))
            >>> [tuple(f.shape) for f in layer.cp_factors(torch.randn(2, 8, 5, 5))]
            [(2, 1, 16), (2, 1, 8), (2, 1, 9)]
        """
        x, _, _ = self._batched(x)
        comps, _, _ = self._generate(x, sample=False)
        return CPFactors(*self._all_factors(comps, lambda n: x.new_ones(x.shape[0], self.rank, n)))

    @torch.no_grad()
    def dynamic_weight(self, x: Tensor) -> Tensor:
        """The per-sample weights of Eq. (2), ``(B, Cout, Cin/groups, *kernel_size)``, in eval mode."""
        return compose_weight(self.weight, *self.cp_factors(x))

    def macs(self, output_shape: Sequence[int], measured: Callable[[nn.Module], int]) -> int:
        """Generator (as measured) + static conv + ``2 * R * Cout * Cin/groups * k^2`` per
        sample for forming and applying the CP tensor (Sec. 3, complexity analysis)."""
        batch = output_shape[0] if len(output_shape) == self.ndim + 2 else 1
        return measured(self.generator) + self.static_macs(output_shape) + batch * 2 * self.rank * self.weight.numel()

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.strategy == "auto" else s + f", strategy={self.strategy}"



class PEDConv2d(PEDConvNd):
    r"""Drop-in replacement for :class:`torch.nn.Conv2d` with an input-dependent weight.

    :class:`PEDConvNd` in two spatial dimensions: the same arguments as ``nn.Conv2d`` (ints or
    pairs) and the method's keyword-only options (``rank``, ``components``, ``reduction``,
    ``min_hidden``, ``variational``, ``sigma``, ``infomax``, ``activation``, ``strategy``),
    documented on :class:`PEDConvNd`.

    Example:
        >>> import torch
        >>> conv = PEDConv2d(16, 32, 3, padding=1)
        >>> conv(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    ndim = 2


class PEDConv1d(PEDConvNd):
    r"""Drop-in replacement for :class:`torch.nn.Conv1d` (audio, time series) with an
    input-dependent weight.

    :class:`PEDConvNd` in one spatial dimension: ``nn.Conv1d``'s arguments (ints or 1-tuples),
    the same options, ``cp_factors(x)`` / ``dynamic_weight(x)``, info-max and export; ``psi``
    runs over the ``k`` kernel taps. It runs on the 2-D execution strategies (a 1-D convolution
    is a 2-D one over a single row), so every strategy serves it.

    Example:
        >>> import torch
        >>> conv = PEDConv1d(16, 32, 5, padding=2)
        >>> conv(torch.randn(2, 16, 100)).shape
        torch.Size([2, 32, 100])
        >>> [tuple(f.shape) for f in conv.cp_factors(torch.randn(2, 16, 100))]
        [(2, 1, 32), (2, 1, 16), (2, 1, 5)]
    """

    ndim = 1


class PEDConv3d(PEDConvNd):
    r"""Drop-in replacement for :class:`torch.nn.Conv3d` (video, volumes) with an
    input-dependent weight.

    :class:`PEDConvNd` in three spatial dimensions: ``nn.Conv3d``'s arguments (ints or
    triples), the same options, ``cp_factors(x)`` / ``dynamic_weight(x)``, info-max and export;
    ``psi`` runs over the ``kd*kh*kw`` kernel taps.

    Example:
        >>> import torch
        >>> conv = PEDConv3d(8, 16, 3, padding=1)
        >>> conv(torch.randn(2, 8, 4, 10, 10)).shape
        torch.Size([2, 16, 4, 10, 10])
        >>> conv.dynamic_weight(torch.randn(2, 8, 4, 10, 10)).shape
        torch.Size([2, 16, 8, 3, 3, 3])
    """

    ndim = 3
