"""ODConv baseline: "Omni-Dimensional Dynamic Convolution", Li, Yao and Yao, ICLR 2022
(https://arxiv.org/abs/2209.07947), the closest recent peer of PEDConv.

Four attentions from one squeeze branch, ``GAP -> 1x1 conv (Cin -> max(Cin/16, 16),
no bias) -> BN -> ReLU``, then heads:

* ``alpha_c``: sigmoid over input channels (applied to the input),
* ``alpha_f``: sigmoid over output channels (applied to the output),
* ``alpha_s``: sigmoid over the ``k*k`` kernel taps,
* ``alpha_w``: softmax over the ``K`` kernels,

and ``y = alpha_f * conv(alpha_c * x, sum_k alpha_w[k] * (alpha_s * W_k))``. As in the
reference code, an attention is skipped (is 1) where it is meaningless: ``alpha_f`` for a
depthwise conv, ``alpha_s`` for a 1x1 kernel and ``alpha_w`` for ``K = 1``. All logits are
divided by a temperature (1 by default; the reference code exposes one too).

With ``K = 1`` the per-sample weight is ``W * alpha_f (x) alpha_c (x) alpha_s``, the same
structure as a rank-1 PEDConv except that ``alpha_c`` spans all input channels; it runs on
pedconv's fast execution (:func:`pedconv.execution.pedconv_conv2d`). ``K > 1`` aggregates a
per-sample weight and runs it batch-as-groups, as the reference code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..execution._torch_specific import cast_for_autocast
from ..execution.dispatch import run_strategy
from ..execution.geometry import add_bias, batch_as_groups_conv
from ..method.cp import CPFactors
from .base import BaselineConv2d

__all__ = ["ODConv2d"]


class ODConv2d(BaselineConv2d):
    """Omni-dimensional dynamic convolution with ``num_kernels`` kernels.

    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``bias``, ``device``, ``dtype``: as in :class:`torch.nn.Conv2d` (integer zero padding).

    Args:
        num_kernels: ``K`` (the ODConv paper's "1x" and "4x" models).
        reduction: squeeze ratio of the attention branch (1/16).
        min_hidden: smallest squeeze width (16).
        temperature: divides every attention logit.

    Example:
        >>> import torch
        >>> ODConv2d(8, 16, 3, padding=1, num_kernels=4)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(
        self, *args: Any, num_kernels: int = 1, reduction: float = 0.0625, min_hidden: int = 16,
        temperature: float = 1.0, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        dd = self.factory_kwargs
        if num_kernels < 1:
            raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
        in_channels, out_channels, groups = self.in_channels, self.out_channels, self.groups
        self.num_kernels, self.temperature = num_kernels, float(temperature)
        kh, kw = self.kernel_size
        hidden = max(int(in_channels * reduction), min_hidden)
        self.fc = nn.Conv2d(in_channels, hidden, 1, bias=False, **dd)
        self.bn = nn.BatchNorm2d(hidden, **dd)
        self.channel_fc = nn.Conv2d(hidden, in_channels, 1, **dd)
        depthwise = in_channels == groups == out_channels
        self.filter_fc = None if depthwise else nn.Conv2d(hidden, out_channels, 1, **dd)
        self.spatial_fc = None if kh * kw == 1 else nn.Conv2d(hidden, kh * kw, 1, **dd)
        self.kernel_fc = None if num_kernels == 1 else nn.Conv2d(hidden, num_kernels, 1, **dd)
        # K kernels stacked along the output dimension: a 4-d parameter (channels_last works).
        self.weight = nn.Parameter(torch.empty(num_kernels * out_channels, in_channels // groups, kh, kw, **dd))
        self.bias = nn.Parameter(torch.empty(out_channels, **dd)) if self.use_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference code's initialisation: Kaiming-normal (fan-out) convs, zero biases."""
        for m in self._attention_modules():
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        for k in range(self.num_kernels):
            nn.init.kaiming_normal_(self.kernels()[k], mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def kernels(self) -> Tensor:
        """The weight as ``(K, Cout, Cin/groups, kh, kw)`` (a view when contiguous)."""
        return self.weight.reshape(self.num_kernels, self.out_channels, *self.weight.shape[1:])

    def _sigmoid_heads(self) -> list[nn.Conv2d]:
        return [m for m in (self.channel_fc, self.filter_fc, self.spatial_fc) if m is not None]

    def _start_as(self, conv: nn.Conv2d) -> None:
        """The sigmoid heads start at zero (every such attention is 1/2) and each kernel is
        ``conv.weight`` times ``2 ** (number of sigmoid attentions)``; the kernel softmax sums to
        one, so it keeps its random initialisation and the kernels still diverge in training.
        Eval outputs equal ``conv``'s (up to the BN of the attention branch, which does not reach
        the output at zero heads)."""
        heads = self._sigmoid_heads()
        for m in heads:
            nn.init.zeros_(m.weight)
            assert m.bias is not None
            nn.init.zeros_(m.bias)
        self.weight.copy_((conv.weight * 2.0 ** len(heads)).repeat(self.num_kernels, 1, 1, 1))
        self._copy_bias_of(conv)

    def attentions(self, x: Tensor) -> tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """``(alpha_c (B, Cin), alpha_f (B, Cout) | None, alpha_s (B, k*k) | None, alpha_w (B, K) | None)``."""
        h = F.relu(self.bn(self.fc(F.adaptive_avg_pool2d(x, 1))))
        t = self.temperature

        def head(m: Optional[nn.Conv2d], act) -> Optional[Tensor]:  # type: ignore[no-untyped-def]
            return None if m is None else act(m(h).flatten(1) / t)

        alpha_c = torch.sigmoid(self.channel_fc(h).flatten(1) / t)
        return (
            alpha_c,
            head(self.filter_fc, torch.sigmoid),
            head(self.spatial_fc, torch.sigmoid),
            head(self.kernel_fc, lambda z: torch.softmax(z, dim=1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        alpha_c, alpha_f, alpha_s, alpha_w = self.attentions(x)
        x, alpha_c, alpha_f, alpha_s, alpha_w = cast_for_autocast(x, alpha_c, alpha_f, alpha_s, alpha_w)  # type: ignore[assignment]
        x = x * alpha_c[:, :, None, None]
        if alpha_w is None:
            factors = CPFactors(None if alpha_f is None else alpha_f.unsqueeze(1), None,
                                None if alpha_s is None else alpha_s.unsqueeze(1))
            y = run_strategy(x, self.weight, None, factors, self.geometry)
        else:
            batch = x.shape[0]
            w = torch.einsum("bk,koihw->boihw", alpha_w, self.kernels().to(alpha_w.dtype))
            if alpha_s is not None:
                w = w * alpha_s.view(batch, 1, 1, *self.kernel_size)
            y = batch_as_groups_conv(x, w, self.geometry)
            if alpha_f is not None:
                y = y * alpha_f[:, :, None, None]
        return add_bias(y, None if self.bias is None else self.bias.to(y.dtype))

    def macs(self, output_shape: Sequence[int], measured: Callable[[nn.Module], int]) -> int:
        """Attention branch (as measured) + the static conv + forming the weight: the
        aggregation over ``K`` kernels (``K * n``) and the tap scaling (``n``); with one
        kernel, scaling by all three attentions (``2n``)."""
        attention = sum(measured(m) for m in self._attention_modules())
        batch = output_shape[0] if len(output_shape) == 4 else 1
        n, k = self.weight.numel() // self.num_kernels, self.num_kernels
        return attention + self.static_macs(output_shape) + batch * ((k + 1) * n if k > 1 else 2 * n)

    def _attention_modules(self) -> list[nn.Conv2d]:
        return [m for m in (self.fc, self.channel_fc, self.filter_fc, self.spatial_fc, self.kernel_fc) if m is not None]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_kernels={self.num_kernels}"
