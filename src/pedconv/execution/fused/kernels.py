"""The Triton kernels of the ``"triton"`` strategy, as plain functions (see :mod:`.launch`).

They are decorated in :mod:`.launch` (``triton.jit`` and autotuning on a GPU, Triton's
interpreter on CPU tensors), never here, so that one source serves both. Every kernel works on
3 spatial dimensions (``D, H, W``); 2-D problems have ``D = 1``, 1-D ones also ``H = 1``.

Notation: ``b`` sample, ``o`` output channel, ``i`` input channel of a filter, ``t`` kernel tap
(``t = (kd * KH + kh) * KW + kw``), ``p`` output position, ``q`` input position, ``R`` rank. The
per-sample weight is ``W_b[o, i, t] = W[o, i, t] * sum_r gamma[b, r, o] phi[b, r, i] psi[b, r, t]``
(Eq. 2); it is never written to memory: every kernel scales the tile of the shared base weight
it has just loaded (in the accumulator's precision, then cast to the operand dtype).

* :func:`conv_forward`: ``y_b = conv(x_b, W_b) + bias`` as one implicit GEMM per sample-aligned
  tile: M = output positions of one sample, N = output channels of a group, K = taps x input
  channels. Rank 1 applies ``gamma`` in the epilogue; ranks > 1 modulate the weight tile.
* :func:`conv_backward_input`: ``dx_b``, the transposed implicit GEMM (M = input positions,
  N = input channels, K = taps x output channels), same modulation.
* :func:`conv_backward_weight`: one pass computing ``dW_b`` tile by tile (M = output channels,
  N = input channels x taps, K = output positions of one sample) and reducing it at once to the
  base weight's gradient ``sum_b dW_b * A_b``, ``dgamma`` and ``S[b, r, (i, t)] = sum_o gamma dW_b
  W`` (``dphi``/``dpsi`` are two small contractions of ``S``): no per-sample weight-sized tensor.
* ``*_direct``: the same convolutions without ``tl.dot`` for few input channels per group
  (depthwise, tiny groups), as sums of per-channel products; their weight gradient is the small
  per-sample ``dW_b``, reduced by :func:`pedconv.method.cp.compose_weight_backward`.

Loads are masked rather than clamped, offsets of the batch dimension are 64-bit. What several
kernels share (the tile of one sample, a tap's offsets, the input a position reads, Eq. (2)'s
modulation of a weight tile) is written once, as the device functions listed in
:data:`DEVICE_FUNCTIONS`: Triton inlines them into the kernels that call them.
"""

# mypy: ignore-errors


from __future__ import annotations

import triton.language as tl
from triton.runtime.jit import JITFunction


def _device(fn):
    """A device function for the compiler (``JITFunction`` whatever ``TRITON_INTERPRET`` said at
    import; :mod:`.launch` swaps in interpreted ones while an interpreted kernel runs)."""
    return JITFunction(fn)


@_device
def _sample_tile(positions, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's sample, its ``BLOCK_M`` positions (of ``positions``), its ``BLOCK_N`` channels
    and which positions exist: the grid's first axis runs over (sample, position tile)."""
    pid = tl.program_id(0)
    tiles_m = (positions + BLOCK_M - 1) // BLOCK_M
    offs_m = (pid % tiles_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    return pid // tiles_m, offs_m, offs_n, offs_m < positions


@_device
def _group_tile(positions, channels, COUT_G, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """:func:`_sample_tile` of a GEMM kernel whose grid's third axis runs over the groups:
    also which of the ``channels`` (of one group) exist, the group and all output channels."""
    b, offs_m, offs_n, m_ok = _sample_tile(positions, BLOCK_M, BLOCK_N)
    return b, offs_m, offs_n, m_ok, offs_n < channels, tl.program_id(2), COUT_G * tl.num_programs(2)


@_device
def _k_step(kk, k_tiles, channels, KH, KW, BLOCK_K: tl.constexpr):
    """Step ``kk`` of a GEMM kernel's loop over (tap, tile of ``channels``): the tap, its
    offsets, the tile's channels and which of them exist."""
    t = kk // k_tiles
    kd, kh, kw = _unflatten(t, KH, KW)
    offs_k = (kk % k_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)
    return t, kd, kh, kw, offs_k, offs_k < channels


@_device
def _store_tile(out, acc, b, sb, ch, sc, d, h, w, sd, sh, sw, m_ok, n_ok):
    """Writes the ``(positions, channels)`` tile ``acc`` of sample ``b`` to ``out``, in its dtype."""
    ptr = out + b.to(tl.int64) * sb + ch[None, :] * sc + (d * sd + h * sh + w * sw)[:, None]
    tl.store(ptr, acc.to(out.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@_device
def _unflatten(offs, H, W):
    """``(d, h, w)`` of flat indices over a ``(D, H, W)`` grid (positions, or taps with ``KH, KW``)."""
    return offs // (H * W), (offs // W) % H, offs % W


@_device
def _reads(od, oh, ow, kd, kh, kw, D, H, W, sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """The input position that output position ``(od, oh, ow)`` reads through tap ``(kd, kh, kw)``,
    and whether it lies inside the input (outside is zero padding)."""
    idd = od * sd - pd + kd * dd
    ih = oh * sh - ph + kh * dh
    iw = ow * sw - pw + kw * dw
    return idd, ih, iw, (idd >= 0) & (idd < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)


@_device
def _read_by(qd, qh, qw, kd, kh, kw, DO, HO, WO, sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """The output position that reads input position ``(qd, qh, qw)`` through tap ``(kd, kh, kw)``,
    and whether there is one (the stride may skip it; it may lie past the output)."""
    td = qd + pd - kd * dd
    th = qh + ph - kh * dh
    tw = qw + pw - kw * dw
    ok = (td >= 0) & (th >= 0) & (tw >= 0) & (td % sd == 0) & (th % sh == 0) & (tw % sw == 0)
    od = td // sd
    oh = th // sh
    ow = tw // sw
    return od, oh, ow, ok & (od < DO) & (oh < HO) & (ow < WO)


@_device
def _component(ptr, row, size, offs, ok, HAS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Entries ``offs`` of row ``row`` of a ``(B * R, size)`` component, or ones where the layer
    has no such component."""
    v = tl.full((BLOCK,), 1.0, ACC)
    if HAS:
        v = tl.load(ptr + row * size + offs, mask=ok, other=0.0).to(ACC)
    return v


@_device
def _modulated_dot(acc, a, wt, k_comp, k_idx, k_size, k_ok, n_comp, n_idx, n_size, n_ok, psi, t, TAPS, b,
                   R: tl.constexpr, HAS_K: tl.constexpr, HAS_N: tl.constexpr, HAS_S: tl.constexpr,
                   ACC: tl.constexpr, PRECISION: tl.constexpr, DOT: tl.constexpr,
                   BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """``acc + a @ wt'``: ``wt'`` is the ``(K, N)`` tile ``wt`` of the base weight at tap ``t``
    times sample ``b``'s ``sum_r (k_r psi_r[t]) (x) n_r`` (Eq. 2, ``k``/``n`` the components along
    the tile's K and N channels). At rank 1 the N side is left out: :func:`_rank1_scaled` applies
    it to the kernel's result instead."""
    if R == 1:
        side = _component(k_comp, b, k_size, k_idx, k_ok, HAS_K, ACC, BLOCK_K)
        if HAS_S:
            side = side * tl.load(psi + b * TAPS + t).to(ACC)
        wt = wt * side[:, None]
    else:
        mod = tl.full((BLOCK_K, BLOCK_N), 0.0, ACC)
        for r in tl.static_range(R):
            side = _component(k_comp, b * R + r, k_size, k_idx, k_ok, HAS_K, ACC, BLOCK_K)
            if HAS_S:
                side = side * tl.load(psi + (b * R + r) * TAPS + t).to(ACC)
            mod += side[:, None] * _component(n_comp, b * R + r, n_size, n_idx, n_ok, HAS_N, ACC, BLOCK_N)[None, :]
        wt = wt * mod
    return tl.dot(a.to(DOT), wt.to(DOT), acc, input_precision=PRECISION)


@_device
def _rank1_scaled(acc, comp, b, size, idx, ok, R: tl.constexpr, HAS: tl.constexpr, ACC: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    """A GEMM kernel's result ``acc`` times the N-side component that :func:`_modulated_dot`
    leaves out at rank 1 (sample ``b``'s entries ``idx``); as it is at higher ranks."""
    if R == 1 and HAS:
        acc = acc * _component(comp, b, size, idx, ok, HAS, ACC, BLOCK_N)[None, :]
    return acc


DEVICE_FUNCTIONS = ("_sample_tile", "_group_tile", "_k_step", "_store_tile", "_unflatten", "_reads", "_read_by",
                    "_component", "_modulated_dot", "_rank1_scaled")
"""The device functions the kernels call, by name (:mod:`.launch` interprets them with the kernels)."""


def conv_forward(
    x, w, bias, gam, phi, psi, y,
    D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sxb, sxc, sxd, sxh, sxw, swo, swi, swt, syb, syc, syd, syh, syw,
    R: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_G: tl.constexpr, HAS_P: tl.constexpr, HAS_S: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # output positions, output channels of the group
    b, offs_m, offs_n, m_ok, n_ok, grp, C_OUT = _group_tile(DO * HO * WO, COUT_G, COUT_G, BLOCK_M, BLOCK_N)
    od, oh, ow = _unflatten(offs_m, HO, WO)
    co = grp * COUT_G + offs_n
    x_b = x + b.to(tl.int64) * sxb + grp * CIN_G * sxc
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    k_tiles = (CIN_G + BLOCK_K - 1) // BLOCK_K
    # one loop over (tap, channel tile), so that the compiler pipelines all of K
    for kk in range(TAPS * k_tiles):
        t, kd, kh, kw, offs_k, k_ok = _k_step(kk, k_tiles, CIN_G, KH, KW, BLOCK_K)
        idd, ih, iw, inside = _reads(od, oh, ow, kd, kh, kw, D, H, W, sd, sh, sw, pd, ph, pw, dd, dh, dw)
        row_ok = m_ok & inside
        a = tl.load(x_b + (idd * sxd + ih * sxh + iw * sxw)[:, None] + offs_k[None, :] * sxc,
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        wt = tl.load(w + co[None, :] * swo + offs_k[:, None] * swi + t * swt,
                     mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
        # K runs over input channels (phi), N over output channels (gamma: at rank 1, the epilogue)
        acc = _modulated_dot(acc, a, wt, phi, offs_k, CIN_G, k_ok, gam, co, C_OUT, n_ok, psi, t, TAPS, b,
                             R, HAS_P, HAS_G, HAS_S, ACC, PRECISION, DOT, BLOCK_K, BLOCK_N)
    acc = _rank1_scaled(acc, gam, b, C_OUT, co, n_ok, R, HAS_G, ACC, BLOCK_N)
    if HAS_BIAS:
        acc += tl.load(bias + co, mask=n_ok, other=0.0).to(ACC)[None, :]
    _store_tile(y, acc, b, syb, co, syc, od, oh, ow, syd, syh, syw, m_ok, n_ok)


def conv_backward_input(
    dy, w, gam, phi, psi, dx,
    D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sgb, sgc, sgd, sgh, sgw, swo, swi, swt, sxb, sxc, sxd, sxh, sxw,
    R: tl.constexpr, HAS_G: tl.constexpr, HAS_P: tl.constexpr, HAS_S: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # input positions, input channels of the group
    b, offs_m, offs_n, m_ok, n_ok, grp, C_OUT = _group_tile(D * H * W, CIN_G, COUT_G, BLOCK_M, BLOCK_N)
    qd, qh, qw = _unflatten(offs_m, H, W)
    dy_b = dy + b.to(tl.int64) * sgb + grp * COUT_G * sgc
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    k_tiles = (COUT_G + BLOCK_K - 1) // BLOCK_K
    for kk in range(TAPS * k_tiles):  # one loop over (tap, channel tile), pipelined as a whole
        t, kd, kh, kw, offs_k, k_ok = _k_step(kk, k_tiles, COUT_G, KH, KW, BLOCK_K)
        od, oh, ow, read = _read_by(qd, qh, qw, kd, kh, kw, DO, HO, WO, sd, sh, sw, pd, ph, pw, dd, dh, dw)
        row_ok = m_ok & read
        row = tl.where(row_ok, od * sgd + oh * sgh + ow * sgw, 0)
        co = grp * COUT_G + offs_k
        a = tl.load(dy_b + row[:, None] + offs_k[None, :] * sgc, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        wt = tl.load(w + co[:, None] * swo + offs_n[None, :] * swi + t * swt,
                     mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
        # K runs over output channels (gamma), N over input channels (phi: at rank 1, the epilogue)
        acc = _modulated_dot(acc, a, wt, gam, co, C_OUT, k_ok, phi, offs_n, CIN_G, n_ok, psi, t, TAPS, b,
                             R, HAS_G, HAS_P, HAS_S, ACC, PRECISION, DOT, BLOCK_K, BLOCK_N)
    acc = _rank1_scaled(acc, phi, b, CIN_G, offs_n, n_ok, R, HAS_P, ACC, BLOCK_N)
    ci = grp * CIN_G + offs_n
    _store_tile(dx, acc, b, sxb, ci, sxc, qd, qh, qw, sxd, sxh, sxw, m_ok, n_ok)


def conv_backward_weight(
    dy, x, w, gam, phi, psi, dw_base, dgam, dside,
    B, D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G, GROUPS,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sgb, sgc, sgd, sgh, sgw, sxb, sxc, sxd, sxh, sxw, swo, swi, swt,
    R: tl.constexpr, HAS_G: tl.constexpr, HAS_P: tl.constexpr, HAS_S: tl.constexpr,
    NEED_W: tl.constexpr, NEED_G: tl.constexpr, NEED_SIDE: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Accumulates (atomically, into zeroed ``ACC`` buffers) ``dw_base`` ``(Cout, Cin_g * TAPS)``,
    ``dgam`` ``(B, R, Cout)`` and ``dside`` ``(B, R, Cin_g * TAPS)``; the grid's third axis splits
    the batch."""
    tiles_o = (COUT_G + BLOCK_M - 1) // BLOCK_M
    grp = tl.program_id(0) // tiles_o
    offs_m = (tl.program_id(0) % tiles_o) * BLOCK_M + tl.arange(0, BLOCK_M)  # output channels of the group
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # (input channel, tap) of a filter
    per_split = (B + tl.num_programs(2) - 1) // tl.num_programs(2)
    C_OUT = COUT_G * GROUPS
    K = CIN_G * TAPS
    m_ok = offs_m < COUT_G
    n_ok = offs_n < K
    co = grp * COUT_G + offs_m
    ci = grp * CIN_G + offs_n // TAPS
    t_n = offs_n % TAPS
    kd, kh, kw = _unflatten(t_n, KH, KW)
    P = DO * HO * WO
    wt = tl.load(w + co[:, None] * swo + (offs_n // TAPS)[None, :] * swi + t_n[None, :] * swt,
                 mask=m_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
    dw_acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    for j in range(per_split):
        b = tl.program_id(2) * per_split + j
        b_ok = b < B
        b = tl.minimum(b, B - 1)  # a valid address for the component loads of a past-the-end sample
        dy_b = dy + b.to(tl.int64) * sgb
        x_b = x + b.to(tl.int64) * sxb
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
        for p0 in range(0, P, BLOCK_K):
            offs_p = p0 + tl.arange(0, BLOCK_K)
            p_ok = (offs_p < P) & b_ok
            od, oh, ow = _unflatten(offs_p, HO, WO)
            a = tl.load(dy_b + co[:, None] * sgc + (od * sgd + oh * sgh + ow * sgw)[None, :],
                        mask=m_ok[:, None] & p_ok[None, :], other=0.0)
            idd, ih, iw, inside = _reads(od[:, None], oh[:, None], ow[:, None], kd[None, :], kh[None, :], kw[None, :],
                                         D, H, W, sd, sh, sw, pd, ph, pw, dd, dh, dw)
            ok = p_ok[:, None] & n_ok[None, :] & inside
            cols = tl.load(x_b + ci[None, :] * sxc + idd * sxd + ih * sxh + iw * sxw, mask=ok, other=0.0)
            acc = tl.dot(a.to(DOT), cols.to(DOT), acc, input_precision=PRECISION)
        # acc = dL/dW_b on this tile; G = acc * W feeds the component gradients
        g = acc * wt
        for r in tl.static_range(R):
            side = (_component(phi, b * R + r, CIN_G, offs_n // TAPS, n_ok, HAS_P, ACC, BLOCK_N)
                    * _component(psi, b * R + r, TAPS, t_n, n_ok, HAS_S, ACC, BLOCK_N))
            out_side = _component(gam, b * R + r, C_OUT, co, m_ok, HAS_G, ACC, BLOCK_M)
            if NEED_G:
                tl.atomic_add(dgam + (b * R + r) * C_OUT + co, tl.sum(g * side[None, :], axis=1), mask=m_ok & b_ok)
            if NEED_SIDE:
                tl.atomic_add(dside + (b * R + r) * K + offs_n, tl.sum(g * out_side[:, None], axis=0),
                              mask=n_ok & b_ok)
            if NEED_W:
                dw_acc += acc * (out_side[:, None] * side[None, :])
    if NEED_W:
        tl.atomic_add(dw_base + co[:, None] * K + offs_n[None, :], dw_acc, mask=m_ok[:, None] & n_ok[None, :])


def conv_forward_direct(
    x, w, bias, gam, phi, psi, y,
    D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G, C_OUT,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sxb, sxc, sxd, sxh, sxw, swo, swi, swt, syb, syc, syd, syh, syw,
    R: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_G: tl.constexpr, HAS_P: tl.constexpr, HAS_S: tl.constexpr,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b, offs_m, offs_n, m_ok = _sample_tile(DO * HO * WO, BLOCK_M, BLOCK_N)  # output positions, channels of all groups
    n_ok = offs_n < C_OUT
    od, oh, ow = _unflatten(offs_m, HO, WO)
    x_b = x + b.to(tl.int64) * sxb
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    for t in range(TAPS):  # the tap outside: its input rows are found once for all channels
        kd, kh, kw = _unflatten(t, KH, KW)
        idd, ih, iw, inside = _reads(od, oh, ow, kd, kh, kw, D, H, W, sd, sh, sw, pd, ph, pw, dd, dh, dw)
        for i in range(CIN_G):
            ci = (offs_n // COUT_G) * CIN_G + i
            wt = tl.load(w + offs_n * swo + i * swi + t * swt, mask=n_ok, other=0.0).to(ACC)
            mod = tl.full((BLOCK_N,), 0.0, ACC)
            for r in tl.static_range(R):  # phi and psi are one number each here
                m = _component(gam, b * R + r, C_OUT, offs_n, n_ok, HAS_G, ACC, BLOCK_N)
                if HAS_P:
                    m = m * tl.load(phi + (b * R + r) * CIN_G + i).to(ACC)
                if HAS_S:
                    m = m * tl.load(psi + (b * R + r) * TAPS + t).to(ACC)
                mod += m
            a = tl.load(x_b + (idd * sxd + ih * sxh + iw * sxw)[:, None] + ci[None, :] * sxc,
                        mask=(m_ok & inside)[:, None] & n_ok[None, :], other=0.0).to(ACC)
            acc += a * (wt * mod).to(x.dtype.element_ty).to(ACC)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias + offs_n, mask=n_ok, other=0.0).to(ACC)[None, :]
    _store_tile(y, acc, b, syb, offs_n, syc, od, oh, ow, syd, syh, syw, m_ok, n_ok)


def conv_backward_input_direct(
    dy, w, gam, phi, psi, dx,
    D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G, C_IN,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sgb, sgc, sgd, sgh, sgw, swo, swi, swt, sxb, sxc, sxd, sxh, sxw,
    R: tl.constexpr, HAS_G: tl.constexpr, HAS_P: tl.constexpr, HAS_S: tl.constexpr,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b, offs_m, offs_n, m_ok = _sample_tile(D * H * W, BLOCK_M, BLOCK_N)  # input positions, channels of all groups
    C_OUT = (C_IN // CIN_G) * COUT_G
    n_ok = offs_n < C_IN
    qd, qh, qw = _unflatten(offs_m, H, W)
    i_loc = offs_n % CIN_G
    dy_b = dy + b.to(tl.int64) * sgb
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    for j in range(COUT_G):
        co = (offs_n // CIN_G) * COUT_G + j
        for t in range(TAPS):
            kd, kh, kw = _unflatten(t, KH, KW)
            od, oh, ow, read = _read_by(qd, qh, qw, kd, kh, kw, DO, HO, WO, sd, sh, sw, pd, ph, pw, dd, dh, dw)
            row_ok = m_ok & read
            row = tl.where(row_ok, od * sgd + oh * sgh + ow * sgw, 0)
            wt = tl.load(w + co * swo + i_loc * swi + t * swt, mask=n_ok, other=0.0).to(ACC)
            mod = tl.full((BLOCK_N,), 0.0, ACC)
            for r in tl.static_range(R):  # psi is one number here
                m = (_component(gam, b * R + r, C_OUT, co, n_ok, HAS_G, ACC, BLOCK_N)
                     * _component(phi, b * R + r, CIN_G, i_loc, n_ok, HAS_P, ACC, BLOCK_N))
                if HAS_S:
                    m = m * tl.load(psi + (b * R + r) * TAPS + t).to(ACC)
                mod += m
            a = tl.load(dy_b + row[:, None] + co[None, :] * sgc, mask=row_ok[:, None] & n_ok[None, :],
                        other=0.0).to(ACC)
            acc += a * (wt * mod).to(dy.dtype.element_ty).to(ACC)[None, :]
    _store_tile(dx, acc, b, sxb, offs_n, sxc, qd, qh, qw, sxd, sxh, sxw, m_ok, n_ok)


def conv_backward_weight_direct(
    dy, x, dw_b,
    D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G, C_OUT,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sgb, sgc, sgd, sgh, sgw, sxb, sxc, sxd, sxh, sxw,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """``dw_b[b, o, i, t] = sum_p dy[b, o, p] x[b, group(o) * Cin_g + i, p * stride + t * dilation]``:
    the per-sample weight gradient, small when the groups are (one program per sample, channel
    tile and (input channel, tap))."""
    tiles_n = (C_OUT + BLOCK_N - 1) // BLOCK_N
    b = tl.program_id(0) // tiles_n
    offs_n = (tl.program_id(0) % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
    i = tl.program_id(1) // TAPS
    t = tl.program_id(1) % TAPS
    kd, kh, kw = _unflatten(t, KH, KW)
    n_ok = offs_n < C_OUT
    ci = (offs_n // COUT_G) * CIN_G + i
    dy_b = dy + b.to(tl.int64) * sgb
    x_b = x + b.to(tl.int64) * sxb
    acc = tl.full((BLOCK_N,), 0.0, ACC)
    for p0 in range(0, DO * HO * WO, BLOCK_M):
        offs_p = p0 + tl.arange(0, BLOCK_M)
        p_ok = offs_p < DO * HO * WO
        od, oh, ow = _unflatten(offs_p, HO, WO)
        idd, ih, iw, inside = _reads(od, oh, ow, kd, kh, kw, D, H, W, sd, sh, sw, pd, ph, pw, dd, dh, dw)
        a = tl.load(dy_b + (od * sgd + oh * sgh + ow * sgw)[:, None] + offs_n[None, :] * sgc,
                    mask=p_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
        v = tl.load(x_b + (idd * sxd + ih * sxh + iw * sxw)[:, None] + ci[None, :] * sxc,
                    mask=(p_ok & inside)[:, None] & n_ok[None, :], other=0.0).to(ACC)
        acc += tl.sum(a * v, axis=0)
    out = dw_b + (b.to(tl.int64) * C_OUT + offs_n) * (CIN_G * TAPS) + i * TAPS + t
    tl.store(out, acc, mask=n_ok)
