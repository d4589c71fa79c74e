"""The export form of the ``"factored"`` strategy: what a traced or exported graph contains.

While tracing or exporting (:func:`~pedconv.execution._torch_specific.is_exporting`),
``"auto"`` and ``"factored"`` run :func:`export_conv2d` instead of the eager kernels. It
computes exactly what :mod:`pedconv.execution.factored` computes, with three aims:

* **constant convolution weights**: every convolution's weight is the shared ``W_base``
  (reshaped) or a constant one-hot kernel, never a tensor computed from the input, so
  engines that reject data-dependent conv weights take the graph;
* **batch independence**: no shape is read from the input; per-sample factors are reshaped
  with ``-1`` for the batch;
* **few nodes**: no per-tap slices and no ``[:, :, None, None]`` indexing (each costs
  ``Slice``/``Unsqueeze`` nodes and their ``Constant`` inputs in the TorchScript exporter).

The forms, for one rank term (ranks add up):

* ``psi`` off or a 1x1 kernel: ``gamma * psi * conv(phi * x, W_base)``.
* kxk ``psi`` (**columns**, any stride, dilation and groups): im2col as a depthwise
  convolution with a constant one-hot kernel (``(Cin * kh*kw, 1, kh, kw)``, ``groups=Cin``:
  every tap's window of every input channel), one ``Mul`` by ``phi (x) psi``, then a 1x1
  convolution with ``W_base`` reshaped to ``(Cout, Cin/groups * kh*kw, 1, 1)`` and the
  layer's ``groups`` (the FLOPs of the kxk convolution), then ``gamma``.
* kxk ``psi``, stride 1, ungrouped, on request (**taps**, ``taps=True``): one 1x1
  convolution with ``W_base`` reordered to ``(Cout * kh*kw, Cin, 1, 1)`` gives every tap's
  output; one ``Mul`` by ``gamma (x) psi``; one grouped convolution (``groups=Cout``) with a
  constant one-hot kernel does the shifted sum over the taps (and adds the bias). Exact too,
  but slower in ONNX Runtime (see :func:`export_conv2d`).

The one-hot convolutions multiply by exactly 1 and add exact zeros, so the results equal
the eager strategies' up to the order of float32 additions.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..method.cp import CPFactors
from .geometry import ConvGeometry, add_bias

__all__ = ["export_conv2d", "im2col_kernel", "tap_sum_kernel"]


def _constant(array: np.ndarray, like: Tensor) -> Tensor:
    """``array`` as a *constant* of the trace: built in numpy, which the tracers do not
    record, so it reaches the graph as one initializer (``torch.eye(...).repeat(...)`` would
    export as ``EyeLike``/``Tile``/``Expand`` nodes that constant folding leaves)."""
    return torch.from_numpy(array).to(dtype=like.dtype, device=like.device)


def tap_sum_kernel(channels: int, kernel: tuple[int, int], like: Tensor) -> Tensor:
    """One-hot ``(channels, kh*kw, kh, kw)``: ``[c, t, i, j] = 1`` iff ``t = i*kw + j``.

    With ``groups=channels`` it sums, for each channel, its ``kh*kw`` tap planes, each
    shifted to its tap's offset (the shifted sum of a kxk convolution).

    Example:
        >>> tap_sum_kernel(2, (1, 2), torch.ones(1))[0]
        tensor([[[1., 0.]],
        <BLANKLINE>
                [[0., 1.]]])
    """
    kh, kw = kernel
    eye = np.eye(kh * kw, dtype=np.float32).reshape(1, kh * kw, kh, kw)
    return _constant(np.ascontiguousarray(np.tile(eye, (channels, 1, 1, 1))), like)


def im2col_kernel(channels: int, kernel: tuple[int, int], like: Tensor) -> Tensor:
    """One-hot ``(channels * kh*kw, 1, kh, kw)``: with ``groups=channels``, output channel
    ``c * kh*kw + t`` is tap ``t``'s window of input channel ``c`` (im2col as a convolution)."""
    kh, kw = kernel
    eye = np.eye(kh * kw, dtype=np.float32).reshape(kh * kw, 1, kh, kw)
    return _constant(np.ascontiguousarray(np.tile(eye, (channels, 1, 1, 1))), like)


# Sizes come from the layer (the weight's shape), never from an activation's shape: reading
# one would put Shape/Gather/Unsqueeze/Concat chains into the exported graph.


def _columns_of(factors: CPFactors, r: int, sizes: tuple[int, int, int]) -> list[Optional[Tensor]]:
    """Rank ``r`` of each ``(B, R, n)`` factor as ``(B, n, 1, 1)``, ready to scale channels
    (one Reshape; a Gather first at rank > 1)."""
    return [
        None if f is None else (f if factors.rank == 1 else f[:, r]).reshape(-1, n, 1, 1)
        for f, n in zip(factors, sizes)
    ]


def _outer(a: Optional[Tensor], b: Tensor, a_size: int, b_size: int) -> Tensor:
    """``(B, a_size * b_size, 1, 1)``: ``a[:, i] * b[:, j]`` at channel ``i * b_size + j``
    (``a`` None means ones: ``b`` repeated)."""
    if a is None:
        return b.repeat(1, a_size, 1, 1)
    return (a.reshape(-1, a_size, 1) * b.reshape(-1, 1, b_size)).reshape(-1, a_size * b_size, 1, 1)


def _pointwise(x: Tensor, weight: Tensor, factors: CPFactors, geometry: ConvGeometry) -> Tensor:
    """``psi`` off or a 1x1 kernel: the static convolution between two scalings, per rank."""
    cout, cin_g, kh, kw = weight.shape
    groups = geometry.groups
    out: Optional[Tensor] = None
    for r in range(factors.rank):
        g, p, s = _columns_of(factors, r, (cout, cin_g, kh * kw))
        xr = x
        if p is not None:  # phi indexes the channels inside one group: the same in every group
            xr = x * (p.repeat(1, groups, 1, 1) if groups > 1 else p)
        y = geometry.conv(xr, weight)
        scale = g if s is None else (s if g is None else g * s)  # a 1x1 psi: one scalar per sample
        if scale is not None:
            y = y * scale
        out = y if out is None else out + y
    assert out is not None
    return out


def _taps(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry) -> Tensor:
    """kxk ``psi``, stride 1, ungrouped: 1x1 conv to every tap's output, one Mul, one
    grouped one-hot conv for the shifted sum (with the bias)."""
    cout, cin, kh, kw = weight.shape
    kk = kh * kw
    # (o, t) order: channel o*kk + t is tap t of output o, so that groups=Cout sums the taps.
    w1 = weight.reshape(cout, cin, kk).transpose(1, 2).reshape(cout * kk, cin, 1, 1)
    acc: Optional[Tensor] = None
    for r in range(factors.rank):
        g, p, s = _columns_of(factors, r, (cout, cin, kk))
        assert s is not None
        xr = x if p is None else x * p
        # The 1x1 conv's zero padding pads every tap plane with exact zeros.
        z = F.conv2d(xr, w1, None, 1, geometry.padding)
        term = z * _outer(g, s, cout, kk)
        acc = term if acc is None else acc + term
    assert acc is not None
    return F.conv2d(acc, tap_sum_kernel(cout, (kh, kw), x), bias, 1, 0, geometry.dilation, cout)


def _columns(x: Tensor, weight: Tensor, factors: CPFactors, geometry: ConvGeometry) -> Tensor:
    """kxk ``psi``, strided or grouped: one-hot depthwise im2col, one Mul, 1x1 conv with ``W_base``."""
    cout, cin_g, kh, kw = weight.shape
    groups = geometry.groups
    cin, kk = cin_g * groups, kh * kw
    cols = F.conv2d(x, im2col_kernel(cin, (kh, kw), x), None, geometry.stride, geometry.padding,
                    geometry.dilation, cin)
    w2 = weight.reshape(cout, cin_g * kk, 1, 1)
    out: Optional[Tensor] = None
    for r in range(factors.rank):
        g, p, s = _columns_of(factors, r, (cout, cin_g, kk))
        assert s is not None
        scale = _outer(p, s, cin_g, kk)  # (B, Cin/groups * kk): phi (x) psi, channel-major
        if groups > 1:  # the same in every group
            scale = scale.repeat(1, groups, 1, 1)
        y = F.conv2d(cols * scale, w2, None, 1, 0, 1, groups)
        if g is not None:
            y = y * g
        out = y if out is None else out + y
    assert out is not None
    return out


def export_conv2d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors, geometry: ConvGeometry,
    *, taps: bool = False,
) -> Tensor:
    """The ``"factored"`` strategy in its export form (see the module docstring).

    Same arguments and result as :func:`pedconv.execution.factored.factored`; every
    convolution weight is ``W_base`` (reshaped) or a constant one-hot kernel. ``taps``
    runs stride-1 ungrouped kxk layers in the taps form instead of the columns form; both
    are exact, but ONNX Runtime's CPU grouped convolution makes the taps form's shifted sum
    slow (ResNet-18, 2 threads: about 1.5x the columns form at batch 1, 1.7x at batch 8), so
    the dispatcher uses the columns form.

    Example:
        >>> from pedconv.execution.factored import factored
        >>> x, w = torch.randn(2, 4, 7, 7), torch.randn(6, 4, 3, 3)
        >>> f = CPFactors(torch.rand(2, 1, 6), torch.rand(2, 1, 4), torch.rand(2, 1, 9))
        >>> g = ConvGeometry.make(padding=1)
        >>> ref = factored(x, w, None, f, g)
        >>> torch.allclose(export_conv2d(x, w, None, f, g), ref, atol=1e-5)
        True
        >>> torch.allclose(export_conv2d(x, w, None, f, g, taps=True), ref, atol=1e-5)
        True
    """
    _, _, kh, kw = weight.shape
    if factors.psi is not None and kh * kw > 1:
        if taps and geometry.groups == 1 and geometry.unit_stride:
            return _taps(x, weight, bias, factors, geometry)
        return add_bias(_columns(x, weight, factors, geometry), bias)
    return add_bias(_pointwise(x, weight, factors, geometry), bias)
