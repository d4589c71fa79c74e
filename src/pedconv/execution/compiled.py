"""The batch-as-groups per-sample convolution as a ``torch.library`` custom operator, for
``torch.compile``.

Traced by the compiler, a batch folded into a convolution's groups makes the batch size a
constant of that convolution, and inductor then compiles the graph again for every new batch
size. ``pedconv::per_sample_conv`` is opaque instead: its fake implementation gives the output
shape for any (symbolic) batch, and at run time it is the ``"materialize"`` strategy (every
sample's weight built, batch-as-groups convolution, chunked over large batches). Its backward is
a second operator that calls materialize's own backward (no recomputed convolution, no autograd
inside an operator). The layer's generator, sampling and scalings around it stay ordinary ops
that inductor fuses. Under ``torch.compile``, :func:`~pedconv.execution.run_strategy` sends the
``"materialize"``, ``"hybrid"``, ``"naive"`` and ``"loop"`` choices here (they compute the same
convolution) and traces ``"factored"``, whose graph does not depend on the batch.

Needs ``torch.library.custom_op`` (torch >= 2.4); with older torch, :data:`AVAILABLE` is False
and ``auto`` takes the traceable ``"factored"`` forms while compiling.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..method.cp import CPFactors
from .geometry import ConvGeometry

__all__ = ["AVAILABLE", "per_sample_conv"]

AVAILABLE = hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_autograd")
"""Whether this torch has custom operators with autograd (torch >= 2.4)."""


def _geometry(stride: list[int], padding: list[int], dilation: list[int], groups: int) -> ConvGeometry:
    return ConvGeometry(tuple(stride), tuple(padding), tuple(dilation), groups)


def _forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor], phi: Optional[Tensor],
             psi: Optional[Tensor], stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
    from .materialize import materialize

    with torch.no_grad():
        y = materialize(x, weight, bias, CPFactors(gamma, phi, psi), _geometry(stride, padding, dilation, groups))
    return y.contiguous()  # the layout the fake implementation promises


def _backward_impl(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor],
                   phi: Optional[Tensor], psi: Optional[Tensor], stride: list[int], padding: list[int],
                   dilation: list[int], groups: int, needs: list[bool]) -> list[Tensor]:
    """Every input's gradient from materialize's own backward, chunk by chunk as its forward ran
    (no recomputed convolution, no autograd); an empty tensor stands for "no gradient"."""
    from .materialize import chunk_size, materialized_conv_backward

    factors, geometry = CPFactors(gamma, phi, psi), _geometry(stride, padding, dilation, groups)
    chunk = chunk_size(weight)
    parts = []
    for i in range(0, x.shape[0], chunk):
        n = min(chunk, x.shape[0] - i)
        parts.append(materialized_conv_backward(grad[i : i + n], x[i : i + n], weight, factors.narrow(i, n), geometry,
                                                [needs[0], needs[1], *needs[3:]]))
    out: list[Optional[Tensor]] = []
    for j, per_chunk in enumerate(zip(*parts)):
        if per_chunk[0] is None:
            out.append(None)
        elif j == 1:  # W_base: summed over the chunks
            out.append(torch.stack(per_chunk).sum(0) if len(per_chunk) > 1 else per_chunk[0])
        else:  # per-sample tensors: concatenated
            out.append(torch.cat(per_chunk) if len(per_chunk) > 1 else per_chunk[0])
    out.insert(2, grad.sum([0, *range(2, grad.dim())]) if bias is not None and needs[2] else None)
    # Contiguous, as the fake implementation promises (a transposed gradient would be read with
    # the wrong strides by the compiled graph).
    return [x.new_empty(0) if g is None else g.contiguous() for g in out]


if AVAILABLE:

    @torch.library.custom_op("pedconv::per_sample_conv", mutates_args=())
    def _conv_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor], phi: Optional[Tensor],
                 psi: Optional[Tensor], stride: list[int], padding: list[int], dilation: list[int],
                 groups: int) -> Tensor:
        return _forward(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)

    @_conv_op.register_fake
    def _(x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor], phi: Optional[Tensor],
          psi: Optional[Tensor], stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
        out = _geometry(stride, padding, dilation, groups).output_size(x.shape[2:], weight.shape[2:])
        return x.new_empty(x.shape[0], weight.shape[0], *out)

    @torch.library.custom_op("pedconv::per_sample_conv_backward", mutates_args=())
    def _conv_backward_op(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor],
                          phi: Optional[Tensor], psi: Optional[Tensor], stride: list[int], padding: list[int],
                          dilation: list[int], groups: int, needs: list[bool]) -> list[Tensor]:
        return _backward_impl(grad, x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups, needs)

    @_conv_backward_op.register_fake
    def _(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor],
          phi: Optional[Tensor], psi: Optional[Tensor], stride: list[int], padding: list[int], dilation: list[int],
          groups: int, needs: list[bool]) -> list[Tensor]:
        inputs = [x, weight, bias, gamma, phi, psi]
        return [t.new_empty(t.shape) if t is not None and need else x.new_empty(0) for t, need in zip(inputs, needs)]

    def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight, bias, gamma, phi, psi)
        ctx.conv = (stride, padding, dilation, groups)

    def _backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        x, weight, bias, gamma, phi, psi = ctx.saved_tensors
        needs = [bool(n) for n in ctx.needs_input_grad[:6]]
        grads = _conv_backward_op(grad.contiguous(), x, weight, bias, gamma, phi, psi, *ctx.conv, needs)
        return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None)

    torch.library.register_autograd("pedconv::per_sample_conv", _backward, setup_context=_setup_context)


def per_sample_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors,
                    geometry: ConvGeometry) -> Tensor:
    """The per-sample convolution with every sample's weight materialized (the ``"materialize"``
    strategy, which computes what ``"hybrid"``, ``"naive"`` and ``"loop"`` compute), through the
    ``pedconv::per_sample_conv`` operator (directly where custom operators are unavailable).

    Example:
        >>> x, w = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3)
        >>> f = CPFactors(torch.rand(2, 1, 5), None, torch.rand(2, 1, 9))
        >>> y = per_sample_conv(x, w, None, f, ConvGeometry.make(padding=1))
        >>> y.shape
        torch.Size([2, 5, 6, 6])
    """
    conv = torch.ops.pedconv.per_sample_conv if AVAILABLE else _forward
    return conv(x, weight, bias, *factors, list(geometry.stride), list(geometry.padding), list(geometry.dilation),
                geometry.groups)
