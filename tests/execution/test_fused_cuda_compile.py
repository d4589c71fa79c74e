"""The fused kernels compile for NVIDIA GPUs, checked here without one: Triton lowers each kernel
to a cubin for sm_80 (A100) and sm_90 (H100/H200) with its bundled ptxas, for every operand dtype,
ranks, and every autotuned tile (-m slow; the default run compiles each kernel once). The
interpreter tests check the values; this checks what the interpreter cannot: types, tile shapes
and layouts the GPU compiler accepts, and that a tile's shared memory fits the card."""

from __future__ import annotations

import inspect

import pytest
import torch

triton = pytest.importorskip("triton", reason="the fused kernels need the triton package, which is not installed")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from pedconv.execution.fused import kernels, launch  # noqa: E402

KERNELS = {  # kernel -> (autotuned tiles, accumulator-typed outputs)
    "conv_forward": (launch.GEMM_CONFIGS, ()),
    "conv_backward_input": (launch.GEMM_CONFIGS, ()),
    "conv_backward_weight": (launch.WEIGHT_GRAD_CONFIGS, ("dw_base", "dgam", "dside")),
    "conv_forward_direct": (launch.DIRECT_CONFIGS, ()),
    "conv_backward_input_direct": (launch.DIRECT_CONFIGS, ()),
    "conv_backward_weight_direct": (launch.DIRECT_CONFIGS, ("dw_b",)),
}
SHARED_MEMORY = {80: 163 * 1024, 90: 227 * 1024}  # per block, opt-in maximum
POINTER = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64"}
POINTER_NAMES = {"x", "w", "bias", "gam", "phi", "psi", "y", "dy", "dx", "dw_base", "dgam", "dside", "dw_b"}


@pytest.fixture(autouse=True)
def _compiler(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the GPU compiler, not the interpreter


def _compile(name: str, config, dtype: torch.dtype, rank: int, arch: int):
    fn = getattr(kernels, name)
    params = list(inspect.signature(fn).parameters)
    acc, acc_dtype, dot = launch._accumulator(dtype, interpret=False)
    consts = dict(R=rank, HAS_BIAS=True, HAS_G=True, HAS_P=True, HAS_S=True, NEED_W=True, NEED_G=True,
                  NEED_SIDE=True, ACC=acc, **dot, **config.kwargs)
    consts = {k: v for k, v in consts.items() if k in params}
    outputs = KERNELS[name][1]
    signature = {p: "constexpr" if p in consts else
                 (POINTER[acc_dtype] if p in outputs else POINTER[dtype]) if p in POINTER_NAMES else "i32"
                 for p in params}
    source = ASTSource(triton.jit(fn), signature, constexprs={(params.index(k),): v for k, v in consts.items()})
    return triton.compile(source, target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=config.num_warps, num_stages=config.num_stages))


def _check(name, config, dtype, rank, arch):
    compiled = _compile(name, config, dtype, rank, arch)
    assert compiled.asm["cubin"], f"{name}: no cubin"
    assert compiled.metadata.shared <= SHARED_MEMORY[arch], (
        f"{name} {config}: {compiled.metadata.shared} bytes of shared memory, sm_{arch} has {SHARED_MEMORY[arch]}")


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_kernel_compiles_for_an_h100_in_bfloat16(name):
    _check(name, KERNELS[name][0][0], torch.bfloat16, 2, 90)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_kernel_and_tile_compiles_for_a100_and_h100(name, rank, dtype, arch):
    """Every tile the autotuner may try on the card: the GEMM tiles whose pipelined operands fit
    its shared memory at this dtype (the others are pruned before autotuning)."""
    itemsize = torch.tensor([], dtype=dtype).element_size()
    for config in KERNELS[name][0]:
        if "BLOCK_K" in config.kwargs and launch.shared_memory_estimate(config, itemsize) > SHARED_MEMORY[arch]:
            continue
        _check(name, config, dtype, rank, arch)
