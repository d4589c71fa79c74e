"""Launching the kernels of :mod:`.kernels`: problem sizes, kernel builds, grids, autotuning,
and the forward and backward of the ``"triton"`` strategy.

On CUDA tensors the kernels are ``triton.jit``-compiled and autotuned over :data:`GEMM_CONFIGS`,
:data:`WEIGHT_GRAD_CONFIGS` and :data:`DIRECT_CONFIGS` (edit these lists to tune a card:
``experiments/fused_bench.py`` reports which tiles won per layer). The lists are short on purpose:
every tile is compiled once per specialisation on first use, which a short GPU run pays for. On CPU tensors
they run in Triton's interpreter (``TRITON_INTERPRET=1``) with :data:`INTERPRETER_BLOCKS`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...method.cp import CPFactors, compose_weight_backward
from ..geometry import ConvGeometry
from . import kernels

__all__ = [
    "DIRECT_CONFIGS",
    "DIRECT_MAX_CIN_G",
    "GEMM_CONFIGS",
    "INTERPRETER_BLOCKS",
    "WEIGHT_GRAD_CONFIGS",
    "conv_backward",
    "conv_forward",
    "interpreter_enabled",
    "shared_memory_estimate",
]

DIRECT_MAX_CIN_G = 8
"""Below this many input channels per group (depthwise, tiny groups) the ``*_direct`` kernels
run: a matrix-multiply unit needs at least 16 along every side of a tile."""

GEMM_CONFIGS: list[triton.Config] = [
    triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k), num_warps=warps, num_stages=stages)
    for m, n, k, warps, stages in [
        (128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4), (128, 128, 64, 8, 3),
    ]
]
"""Tiles autotuned for the forward and input-gradient implicit GEMMs (M positions, N channels,
K input or output channels per tap)."""

WEIGHT_GRAD_CONFIGS: list[triton.Config] = [
    triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k), num_warps=warps, num_stages=stages)
    for m, n, k, warps, stages in [(64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (128, 128, 32, 8, 3)]
]
"""Tiles autotuned for the fused weight-gradient kernel (M output channels, N input channels x
taps, K output positions)."""

DIRECT_CONFIGS: list[triton.Config] = [
    triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_warps=warps)
    for m, n, warps in [(64, 32, 4), (128, 32, 4), (64, 64, 4), (256, 16, 4)]
]
"""Tiles autotuned for the ``*_direct`` kernels (M positions, N channels)."""

INTERPRETER_BLOCKS: dict[str, int] = dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=32)
"""The fixed tiles used in Triton's interpreter (no autotuning there)."""

_AUTOTUNE_KEY = ["CIN_G", "COUT_G", "TAPS", "DO", "HO", "WO"]  # a layer shape (not the batch)


def interpreter_enabled() -> bool:
    """Whether Triton's interpreter is switched on (``TRITON_INTERPRET=1``), read at call time.

    Example:
        >>> isinstance(interpreter_enabled(), bool)
        True
    """
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def shared_memory_estimate(config: triton.Config, itemsize: int) -> int:
    """Bytes of shared memory a GEMM tile configuration pipelines: ``num_stages`` copies of its
    two operand tiles (an upper bound of what Triton allocates).

    Example:
        >>> shared_memory_estimate(triton.Config(dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32), num_stages=3), 2)
        24576
    """
    m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return config.num_stages * (m * k + k * n) * itemsize


@functools.lru_cache(maxsize=8)
def _shared_memory_limit(index: Optional[int]) -> int:
    props = torch.cuda.get_device_properties(index)
    return int(getattr(props, "shared_memory_per_block_optin", 0) or 99 * 1024)


def _prune(n_arg: str, k_arg: str, operand: str) -> Callable[..., list[triton.Config]]:
    """Drop tiles far larger than the problem's channel counts, and tiles whose pipelined operands
    do not fit the card's shared memory at this dtype (keep at least one)."""

    def prune(configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any) -> list[triton.Config]:
        n = max(16, triton.next_power_of_2(int(named_args[n_arg])))
        k = max(16, triton.next_power_of_2(int(named_args[k_arg])))
        tensor = named_args[operand]
        limit = _shared_memory_limit(tensor.device.index) if tensor.device.type == "cuda" else 1 << 30
        kept = [c for c in configs if c.kwargs["BLOCK_N"] <= n and c.kwargs["BLOCK_K"] <= k
                and shared_memory_estimate(c, tensor.element_size()) <= limit]
        return kept or [min(configs, key=lambda c: shared_memory_estimate(c, tensor.element_size()))]

    return prune


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool) -> dict[str, Any]:
    """Every kernel, interpreted or compiled (and autotuned), built once per mode."""
    names = ["conv_forward", "conv_backward_input", "conv_backward_weight", "conv_forward_direct",
             "conv_backward_input_direct", "conv_backward_weight_direct"]
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return {name: InterpretedFunction(getattr(kernels, name)) for name in names}
    jit = {name: triton.jit(getattr(kernels, name)) for name in names}
    return {
        "conv_forward": triton.autotune(GEMM_CONFIGS, key=_AUTOTUNE_KEY, prune_configs_by={
            "early_config_prune": _prune("COUT_G", "CIN_G", "x")})(jit["conv_forward"]),
        "conv_backward_input": triton.autotune(GEMM_CONFIGS, key=_AUTOTUNE_KEY, prune_configs_by={
            "early_config_prune": _prune("CIN_G", "COUT_G", "dy")})(jit["conv_backward_input"]),
        "conv_backward_weight": triton.autotune(
            WEIGHT_GRAD_CONFIGS, key=_AUTOTUNE_KEY, reset_to_zero=["dw_base", "dgam", "dside"], prune_configs_by={
                "early_config_prune": _prune("COUT_G", "CIN_G", "dy")},
        )(jit["conv_backward_weight"]),
        "conv_forward_direct": triton.autotune(DIRECT_CONFIGS, key=_AUTOTUNE_KEY)(jit["conv_forward_direct"]),
        "conv_backward_input_direct": triton.autotune(DIRECT_CONFIGS, key=_AUTOTUNE_KEY)(
            jit["conv_backward_input_direct"]),
        "conv_backward_weight_direct": triton.autotune(DIRECT_CONFIGS, key=_AUTOTUNE_KEY)(
            jit["conv_backward_weight_direct"]),
    }


def _kernels_for(x: Tensor) -> tuple[dict[str, Any], dict[str, int]]:
    """The kernels for ``x``'s device and the tiles to pass (none where autotuned)."""
    interpret = interpreter_enabled()
    if x.device.type != "cuda" and not interpret:
        raise RuntimeError(
            f"strategy 'triton' runs on CUDA tensors, got a {x.device.type} tensor; on the CPU it needs "
            "Triton's interpreter (set TRITON_INTERPRET=1), or use strategy='auto'"
        )
    return _kernels(interpret), (INTERPRETER_BLOCKS if interpret else {})


@functools.lru_cache(maxsize=8)
def _multiprocessors(index: Optional[int]) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count if torch.cuda.is_available() else 1


@dataclass(frozen=True)
class _Problem:
    """A convolution's sizes in 3 spatial dimensions (2-D: ``D = 1``; 1-D: ``D = H = 1``)."""

    batch: int
    cin_g: int
    cout_g: int
    groups: int
    size: tuple[int, int, int]
    out: tuple[int, int, int]
    kernel: tuple[int, int, int]
    geometry: tuple[int, ...]  # stride (3), padding (3), dilation (3)

    @classmethod
    def make(cls, x: Tensor, weight: Tensor, geometry: ConvGeometry) -> _Problem:
        pad = 3 - geometry.ndim

        def three(v: Sequence[int], fill: int) -> tuple[int, int, int]:
            return (fill,) * pad + tuple(v)  # type: ignore[return-value]

        out = geometry.output_size(x.shape[2:], weight.shape[2:])
        if min(out) < 1:
            raise ValueError(f"strategy 'triton': the kernel {tuple(weight.shape[2:])} does not fit the input "
                             f"{tuple(x.shape[2:])} with this padding and dilation")
        return cls(x.shape[0], weight.shape[1], weight.shape[0] // geometry.groups, geometry.groups,
                   three(x.shape[2:], 1), three(out, 1), three(weight.shape[2:], 1),
                   (*three(geometry.stride, 1), *three(geometry.padding, 0), *three(geometry.dilation, 1)))

    @property
    def taps(self) -> int:
        return math.prod(self.kernel)

    @property
    def cin(self) -> int:
        return self.cin_g * self.groups

    @property
    def cout(self) -> int:
        return self.cout_g * self.groups

    @property
    def direct(self) -> bool:
        return self.cin_g < DIRECT_MAX_CIN_G

    def sizes(self) -> tuple[int, ...]:
        """``D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G``, as every kernel takes them."""
        return (*self.size, *self.out, *self.kernel[1:], self.taps, self.cin_g, self.cout_g)

    def as_5d(self, t: Tensor) -> Tensor:
        """An ``(N, C, *spatial)`` tensor viewed with 3 spatial dimensions."""
        return t.view(*t.shape[:2], *((1,) * (5 - t.dim())), *t.shape[2:])


def _weight(weight: Tensor, problem: _Problem) -> Tensor:
    """``W`` as ``(Cout, Cin_g, taps)``; on a GPU stored output channel fastest, so that the
    ``(K, N)`` tiles the GEMMs load are contiguous along N."""
    w = weight.reshape(problem.cout, problem.cin_g, problem.taps)
    if weight.device.type == "cuda":
        w = w.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    return w


_TRITON_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
                  torch.float64: tl.float64}


def _accumulator(dtype: torch.dtype, interpret: bool) -> tuple[Any, torch.dtype, dict[str, Any]]:
    """``(ACC, its torch dtype, {PRECISION, DOT})`` for an operand dtype: float64 stays float64;
    float32 uses TF32 exactly where torch's cuDNN convolutions do
    (``torch.backends.cudnn.allow_tf32``); ``DOT`` is the dtype of the matrix-product operands."""
    if dtype not in _TRITON_DTYPES:
        raise TypeError(f"strategy 'triton' takes float16, bfloat16, float32 or float64 tensors, got {dtype}")
    if dtype == torch.float64:
        return tl.float64, torch.float64, dict(PRECISION="ieee", DOT=tl.float64)
    tf32 = dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    # Triton's interpreter multiplies bfloat16 operands as raw integers: there, float32 operands
    # (exact for bfloat16 values; the products accumulate in float32 either way).
    dot = tl.float32 if interpret and dtype == torch.bfloat16 else _TRITON_DTYPES[dtype]
    return tl.float32, torch.float32, dict(PRECISION="tf32" if tf32 else "ieee", DOT=dot)


def _flags(factors: CPFactors) -> dict[str, Any]:
    return dict(R=factors.rank, HAS_G=factors.gamma is not None, HAS_P=factors.phi is not None,
                HAS_S=factors.psi is not None)


def _components(factors: CPFactors, fallback: Tensor) -> list[Tensor]:
    """Contiguous components (kernels index them densely); a disabled one is a dummy pointer."""
    return [fallback if c is None else c.contiguous() for c in factors]


def _output_like(x: Tensor, shape: Sequence[int]) -> Tensor:
    """A new tensor of ``shape`` in ``x``'s memory format (channels-last stays channels-last)."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)


def _interpreted_device_function(fn: Any) -> Any:
    """``fn`` (a ``JITFunction``) as a device function for Triton's interpreter that, unlike
    triton's own ``InterpretedFunction.__call__``, undoes its patching of ``triton.language`` when
    it returns: left patched, ``tl.core`` breaks every later GPU compilation in the process."""
    from triton.runtime import interpreter

    class DeviceFunction(interpreter.InterpretedFunction):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            scope = interpreter._patch_lang(self.fn)
            try:
                return self.rewrite()(*args, **kwargs)
            finally:
                if scope is not None:
                    scope.restore()

    return DeviceFunction(fn.fn)


@contextlib.contextmanager
def _interpretable_language() -> Iterator[None]:
    """While a kernel runs in the interpreter: the ``@triton.jit`` device functions it calls
    (``tl.sum``, compiled or interpreted by whether ``TRITON_INTERPRET`` was set when triton was
    first imported, and :data:`.kernels.DEVICE_FUNCTIONS`, always compiled) as interpreted
    functions, so that switching the interpreter on after importing torch works."""
    from triton.runtime.jit import JITFunction

    swapped = [(tl, "sum", tl.sum)] + [(kernels, name, getattr(kernels, name)) for name in kernels.DEVICE_FUNCTIONS]
    swapped = [(owner, name, fn) for owner, name, fn in swapped if isinstance(fn, JITFunction)]
    for owner, name, fn in swapped:
        setattr(owner, name, _interpreted_device_function(fn))
    try:
        yield
    finally:
        for owner, name, fn in swapped:
            setattr(owner, name, fn)


def _launch(kernel: Any, grid: Callable[[dict[str, Any]], tuple[int, ...]], blocks: dict[str, int],
            *args: Any, direct: bool = False, **consts: Any) -> None:
    """``kernel[grid](*args, **consts)`` with the interpreter's fixed tiles (none where autotuned)."""
    if not blocks:
        kernel[grid](*args, **consts)
        return
    tiles = {k: v for k, v in blocks.items() if not (direct and k == "BLOCK_K")}
    with _interpretable_language():
        kernel[grid](*args, **consts, **tiles)


def conv_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], factors: CPFactors,
                 geometry: ConvGeometry) -> Tensor:
    """``y_b = conv(x_b, W_b) + bias`` with ``W_b`` of Eq. (2), never materialized."""
    kern, blocks = _kernels_for(x)
    pr = _Problem.make(x, weight, geometry)
    y = _output_like(x, (pr.batch, pr.cout, *geometry.output_size(x.shape[2:], weight.shape[2:])))
    acc, _, dot = _accumulator(x.dtype, bool(blocks))
    w = _weight(weight, pr)
    args = (pr.as_5d(x), w, w if bias is None else bias, *_components(factors, w), pr.as_5d(y), *pr.sizes())
    strides = (*pr.geometry, *pr.as_5d(x).stride(), *w.stride(), *pr.as_5d(y).stride())
    consts = dict(HAS_BIAS=bias is not None, ACC=acc, **_flags(factors))
    positions = math.prod(pr.out)
    if pr.direct:
        _launch(kern["conv_forward_direct"],
                lambda m: (pr.batch * triton.cdiv(positions, m["BLOCK_M"]), triton.cdiv(pr.cout, m["BLOCK_N"])),
                blocks, *args, pr.cout, *strides, direct=True, **consts)
    else:
        _launch(kern["conv_forward"],
                lambda m: (pr.batch * triton.cdiv(positions, m["BLOCK_M"]), triton.cdiv(pr.cout_g, m["BLOCK_N"]),
                           pr.groups),
                blocks, *args, *strides, **dot, **consts)
    return y


def conv_backward(grad: Tensor, x: Tensor, weight: Tensor, has_bias: bool, factors: CPFactors,
                  geometry: ConvGeometry, needs: Sequence[bool]) -> tuple[Optional[Tensor], ...]:
    """Gradients ``(x, weight, bias, gamma, phi, psi)`` of :func:`conv_forward` (``needs``: which;
    ``None`` for the others and for disabled components)."""
    kern, blocks = _kernels_for(x)
    pr = _Problem.make(x, weight, geometry)
    grad = grad.to(x.dtype)
    acc, acc_dtype, dot = _accumulator(x.dtype, bool(blocks))
    w = _weight(weight, pr)
    comps = _components(factors, w)
    g5, x5 = pr.as_5d(grad), pr.as_5d(x)
    flags = _flags(factors)
    common = (*pr.geometry, *g5.stride())
    grad_x = None
    if needs[0]:
        grad_x = _output_like(x, x.shape)
        args = (g5, w, *comps, pr.as_5d(grad_x), *pr.sizes())
        strides = (*common, *w.stride(), *pr.as_5d(grad_x).stride())
        inputs = math.prod(pr.size)
        if pr.direct:
            _launch(kern["conv_backward_input_direct"],
                    lambda m: (pr.batch * triton.cdiv(inputs, m["BLOCK_M"]), triton.cdiv(pr.cin, m["BLOCK_N"])),
                    blocks, *args, pr.cin, *strides, direct=True, ACC=acc, **flags)
        else:
            _launch(kern["conv_backward_input"],
                    lambda m: (pr.batch * triton.cdiv(inputs, m["BLOCK_M"]), triton.cdiv(pr.cin_g, m["BLOCK_N"]),
                               pr.groups),
                    blocks, *args, *strides, ACC=acc, **dot, **flags)
    need_w = bool(needs[1])
    need_g, need_p, need_s = (bool(n) and c is not None for n, c in zip(needs[3:], factors))
    grad_weight = grad_gamma = grad_phi = grad_psi = None
    if need_w or need_g or need_p or need_s:
        if pr.direct:
            grad_weight, grad_gamma, grad_phi, grad_psi = _weight_grads_direct(
                kern, blocks, g5, x5, weight, factors, pr, acc, acc_dtype, [need_w, need_g, need_p, need_s])
        else:
            grad_weight, grad_gamma, grad_phi, grad_psi = _weight_grads(
                kern, blocks, g5, x5, w, comps, factors, pr, acc, acc_dtype, dot,
                [need_w, need_g, need_p, need_s])
    if grad_weight is not None:
        grad_weight = grad_weight.reshape(weight.shape)
    grad_bias = grad.sum([0, *range(2, grad.dim())]) if has_bias and needs[2] else None
    out = (grad_x, grad_weight, grad_bias, grad_gamma, grad_phi, grad_psi)
    like = (x, weight, None, *factors)
    return tuple(g if g is None or t is None else g.to(t.dtype) for g, t in zip(out, like))


def _weight_grads(kern: dict[str, Any], blocks: dict[str, int], g5: Tensor, x5: Tensor, w: Tensor,
                  comps: list[Tensor], factors: CPFactors, pr: _Problem, acc: Any, acc_dtype: torch.dtype,
                  dot: dict[str, Any], needs: list[bool]) -> tuple[Optional[Tensor], ...]:
    """The fused weight-gradient kernel, then ``dphi``/``dpsi`` from its ``S`` (two small sums)."""
    need_w, need_g, need_p, need_s = needs
    rank, k = factors.rank, pr.cin_g * pr.taps
    dw_base = g5.new_zeros(pr.cout, k, dtype=acc_dtype)
    dgam = g5.new_zeros(pr.batch, rank, pr.cout, dtype=acc_dtype)
    dside = g5.new_zeros(pr.batch, rank, k, dtype=acc_dtype)
    sms = _multiprocessors(g5.device.index) if g5.device.type == "cuda" else 1

    def grid(m: dict[str, Any]) -> tuple[int, ...]:
        tiles = pr.groups * triton.cdiv(pr.cout_g, m["BLOCK_M"]) * triton.cdiv(k, m["BLOCK_N"])
        # split the batch until the grid fills the card about twice
        return (pr.groups * triton.cdiv(pr.cout_g, m["BLOCK_M"]), triton.cdiv(k, m["BLOCK_N"]),
                max(1, min(pr.batch, (2 * sms + tiles - 1) // tiles)))

    _launch(kern["conv_backward_weight"], grid, blocks, g5, x5, w, *comps, dw_base, dgam, dside, pr.batch,
            *pr.sizes(), pr.groups, *pr.geometry, *g5.stride(), *x5.stride(), *w.stride(), ACC=acc,
            **dot, NEED_W=need_w, NEED_G=need_g, NEED_SIDE=need_p or need_s, **_flags(factors))
    _, phi, psi = factors.dense(pr.cout, pr.cin_g, pr.taps)
    side = dside.view(pr.batch, rank, pr.cin_g, pr.taps)
    return (dw_base if need_w else None, dgam if need_g else None,
            (side * psi[:, :, None, :]).sum(-1) if need_p else None,
            (side * phi[:, :, :, None]).sum(2) if need_s else None)


def _weight_grads_direct(kern: dict[str, Any], blocks: dict[str, int], g5: Tensor, x5: Tensor, weight: Tensor,
                         factors: CPFactors, pr: _Problem, acc: Any, acc_dtype: torch.dtype,
                         needs: list[bool]) -> tuple[Optional[Tensor], ...]:
    """Few input channels per group: the small per-sample ``dW_b``, then Eq. (2)'s backward."""
    dw_b = g5.new_empty(pr.batch, pr.cout, pr.cin_g, pr.taps, dtype=acc_dtype)
    _launch(kern["conv_backward_weight_direct"],
            lambda m: (pr.batch * triton.cdiv(pr.cout, m["BLOCK_N"]), pr.cin_g * pr.taps),
            blocks, g5, x5, dw_b, *pr.sizes(), pr.cout, *pr.geometry, *g5.stride(), *x5.stride(), direct=True,
            ACC=acc)
    cast = CPFactors(*(None if c is None else c.to(acc_dtype) for c in factors))
    return compose_weight_backward(dw_b, weight.to(acc_dtype), cast, needs)
