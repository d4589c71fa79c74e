"""The per-sample convolutions as ``torch.library`` custom operators, for ``torch.compile``.

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

``pedconv::fused_conv`` is the same for the ``"triton"`` strategy (:mod:`pedconv.execution.fused`):
its kernels take any batch already, and the operator keeps the compiler from tracing into them.

Needs ``torch.library.custom_op`` (torch >= 2.4); with older torch, :data:`AVAILABLE` is False
and ``auto`` takes the traceable ``"factored"`` forms while compiling.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..method.cp import CPFactors
from .geometry import ConvGeometry

__all__ = ["AVAILABLE", "fused_conv", "per_sample_conv"]

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


def _fused_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor],
                   phi: Optional[Tensor], psi: Optional[Tensor], stride: list[int], padding: list[int],
                   dilation: list[int], groups: int) -> Tensor:
    from .fused import fused_forward

    return fused_forward(x, weight, bias, CPFactors(gamma, phi, psi), _geometry(stride, padding, dilation, groups))


def _fused_backward(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor],
                    phi: Optional[Tensor], psi: Optional[Tensor], stride: list[int], padding: list[int],
                    dilation: list[int], groups: int, needs: list[bool]) -> list[Tensor]:
    from .fused import fused_backward

    grads = fused_backward(grad, x, weight, bias is not None, CPFactors(gamma, phi, psi),
                           _geometry(stride, padding, dilation, groups), needs)
    return [x.new_empty(0) if g is None else g.contiguous() for g in grads]


def _define(name: str, forward: Any, backward: Any) -> None:
    """Register ``pedconv::<name>`` (``forward``) and ``pedconv::<name>_backward`` (``backward``),
    with fake implementations for any (symbolic) batch and the autograd formula joining them."""

    @torch.library.custom_op(f"pedconv::{name}", mutates_args=())
    def conv_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor], phi: Optional[Tensor],
                psi: Optional[Tensor], stride: list[int], padding: list[int], dilation: list[int],
                groups: int) -> Tensor:
        return forward(x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups)

    @conv_op.register_fake
    def _(x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor], phi: Optional[Tensor],
          psi: Optional[Tensor], stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
        out = _geometry(stride, padding, dilation, groups).output_size(x.shape[2:], weight.shape[2:])
        return x.new_empty(x.shape[0], weight.shape[0], *out)

    @torch.library.custom_op(f"pedconv::{name}_backward", mutates_args=())
    def backward_op(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor],
                    phi: Optional[Tensor], psi: Optional[Tensor], stride: list[int], padding: list[int],
                    dilation: list[int], groups: int, needs: list[bool]) -> list[Tensor]:
        return backward(grad, x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups, needs)

    @backward_op.register_fake
    def _(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], gamma: Optional[Tensor],
          phi: Optional[Tensor], psi: Optional[Tensor], stride: list[int], padding: list[int], dilation: list[int],
          groups: int, needs: list[bool]) -> list[Tensor]:
        inputs = [x, weight, bias, gamma, phi, psi]
        return [t.new_empty(t.shape) if t is not None and need else x.new_empty(0) for t, need in zip(inputs, needs)]

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, bias, gamma, phi, psi, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight, bias, gamma, phi, psi)
        ctx.conv = (stride, padding, dilation, groups)

    def autograd_backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        x, weight, bias, gamma, phi, psi = ctx.saved_tensors
        needs = [bool(n) for n in ctx.needs_input_grad[:6]]
        grads = backward_op(grad.contiguous(), x, weight, bias, gamma, phi, psi, *ctx.conv, needs)
        return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None)

    torch.library.register_autograd(f"pedconv::{name}", autograd_backward, setup_context=setup_context)


if AVAILABLE:
    _define("per_sample_conv", _forward, _backward_impl)
    _define("fused_conv", _fused_forward, _fused_backward)


def _call(name: str, strategy: Any, x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors,
          geometry: ConvGeometry) -> Tensor:
    """``pedconv::<name>``, or the strategy itself (autograd included) without custom operators."""
    if not AVAILABLE:
        return strategy(x, weight, bias, factors, geometry)
    return getattr(torch.ops.pedconv, name)(x, weight, bias, *factors, list(geometry.stride),
                                             list(geometry.padding), list(geometry.dilation), geometry.groups)


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
    from .materialize import materialize

    return _call("per_sample_conv", materialize, x, weight, bias, factors, geometry)


def fused_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors,
               geometry: ConvGeometry) -> Tensor:
    """The ``"triton"`` strategy's kernels (:mod:`pedconv.execution.fused`) through the
    ``pedconv::fused_conv`` operator (the strategy itself where custom operators are unavailable).
    On CPU tensors it needs Triton's interpreter, like the strategy itself.

    Example:
        >>> import os
        >>> os.environ["TRITON_INTERPRET"] = "1"
        >>> x, w = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3)
        >>> f = CPFactors(torch.rand(2, 1, 5), None, torch.rand(2, 1, 9))
        >>> fused_conv(x, w, None, f, ConvGeometry.make(padding=1)).shape
        torch.Size([2, 5, 6, 6])
        >>> del os.environ["TRITON_INTERPRET"]
    """
    from .fused import fused

    return _call("fused_conv", fused, x, weight, bias, factors, geometry)
