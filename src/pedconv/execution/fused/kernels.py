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

Loads are masked rather than clamped, offsets of the batch dimension are 64-bit.
"""

# mypy: ignore-errors


from __future__ import annotations

import triton.language as tl


def conv_forward(
    x, w, bias, gam, phi, psi, y,
    D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sxb, sxc, sxd, sxh, sxw, swo, swi, swt, syb, syc, syd, syh, syw,
    R: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_G: tl.constexpr, HAS_P: tl.constexpr, HAS_S: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    tiles_m = (DO * HO * WO + BLOCK_M - 1) // BLOCK_M
    b = pid // tiles_m
    offs_m = (pid % tiles_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    grp = tl.program_id(2)
    C_OUT = COUT_G * tl.num_programs(2)
    m_ok = offs_m < DO * HO * WO
    n_ok = offs_n < COUT_G
    od = offs_m // (HO * WO)
    oh = (offs_m // WO) % HO
    ow = offs_m % WO
    co = grp * COUT_G + offs_n
    x_b = x + b.to(tl.int64) * sxb + grp * CIN_G * sxc
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    k_tiles = (CIN_G + BLOCK_K - 1) // BLOCK_K
    # one loop over (tap, channel tile), so that the compiler pipelines all of K
    for kk in range(TAPS * k_tiles):
        t = kk // k_tiles
        kd = t // (KH * KW)
        kh = (t // KW) % KH
        kw = t % KW
        idd = od * sd - pd + kd * dd
        ih = oh * sh - ph + kh * dh
        iw = ow * sw - pw + kw * dw
        row_ok = m_ok & (idd >= 0) & (idd < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        row = idd * sxd + ih * sxh + iw * sxw
        offs_k = (kk % k_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = offs_k < CIN_G
        a = tl.load(x_b + row[:, None] + offs_k[None, :] * sxc, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        wt = tl.load(w + co[None, :] * swo + offs_k[:, None] * swi + t * swt,
                     mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
        if R == 1:  # phi and psi scale the weight's input side; gamma waits for the epilogue
            side = tl.full((BLOCK_K,), 1.0, ACC)
            if HAS_P:
                side = side * tl.load(phi + b * CIN_G + offs_k, mask=k_ok, other=0.0).to(ACC)
            if HAS_S:
                side = side * tl.load(psi + b * TAPS + t).to(ACC)
            wt = wt * side[:, None]
        else:
            mod = tl.full((BLOCK_K, BLOCK_N), 0.0, ACC)
            for r in tl.static_range(R):
                side = tl.full((BLOCK_K,), 1.0, ACC)
                if HAS_P:
                    side = side * tl.load(phi + (b * R + r) * CIN_G + offs_k, mask=k_ok, other=0.0).to(ACC)
                if HAS_S:
                    side = side * tl.load(psi + (b * R + r) * TAPS + t).to(ACC)
                out_side = tl.full((BLOCK_N,), 1.0, ACC)
                if HAS_G:
                    out_side = tl.load(gam + (b * R + r) * C_OUT + co, mask=n_ok, other=0.0).to(ACC)
                mod += side[:, None] * out_side[None, :]
            wt = wt * mod
        acc = tl.dot(a.to(DOT), wt.to(DOT), acc, input_precision=PRECISION)
    if R == 1 and HAS_G:
        acc = acc * tl.load(gam + b * C_OUT + co, mask=n_ok, other=0.0).to(ACC)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias + co, mask=n_ok, other=0.0).to(ACC)[None, :]
    out = y + b.to(tl.int64) * syb + co[None, :] * syc + (od * syd + oh * syh + ow * syw)[:, None]
    tl.store(out, acc.to(y.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def conv_backward_input(
    dy, w, gam, phi, psi, dx,
    D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sgb, sgc, sgd, sgh, sgw, swo, swi, swt, sxb, sxc, sxd, sxh, sxw,
    R: tl.constexpr, HAS_G: tl.constexpr, HAS_P: tl.constexpr, HAS_S: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    tiles_m = (D * H * W + BLOCK_M - 1) // BLOCK_M
    b = pid // tiles_m
    offs_m = (pid % tiles_m) * BLOCK_M + tl.arange(0, BLOCK_M)  # input positions
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels of the group
    grp = tl.program_id(2)
    C_OUT = COUT_G * tl.num_programs(2)
    m_ok = offs_m < D * H * W
    n_ok = offs_n < CIN_G
    qd = offs_m // (H * W)
    qh = (offs_m // W) % H
    qw = offs_m % W
    dy_b = dy + b.to(tl.int64) * sgb + grp * COUT_G * sgc
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    k_tiles = (COUT_G + BLOCK_K - 1) // BLOCK_K
    for kk in range(TAPS * k_tiles):  # one loop over (tap, channel tile), pipelined as a whole
        t = kk // k_tiles
        kd = t // (KH * KW)
        kh = (t // KW) % KH
        kw = t % KW
        # the output position that reads input q through tap t, where there is one
        td = qd + pd - kd * dd
        th = qh + ph - kh * dh
        tw = qw + pw - kw * dw
        row_ok = m_ok & (td >= 0) & (th >= 0) & (tw >= 0) & (td % sd == 0) & (th % sh == 0) & (tw % sw == 0)
        od = td // sd
        oh = th // sh
        ow = tw // sw
        row_ok = row_ok & (od < DO) & (oh < HO) & (ow < WO)
        row = tl.where(row_ok, od * sgd + oh * sgh + ow * sgw, 0)
        offs_k = (kk % k_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = offs_k < COUT_G
        co = grp * COUT_G + offs_k
        a = tl.load(dy_b + row[:, None] + offs_k[None, :] * sgc, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        wt = tl.load(w + co[:, None] * swo + offs_n[None, :] * swi + t * swt,
                     mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
        if R == 1:  # gamma and psi scale the weight's output side; phi waits for the epilogue
            side = tl.full((BLOCK_K,), 1.0, ACC)
            if HAS_G:
                side = side * tl.load(gam + b * C_OUT + co, mask=k_ok, other=0.0).to(ACC)
            if HAS_S:
                side = side * tl.load(psi + b * TAPS + t).to(ACC)
            wt = wt * side[:, None]
        else:
            mod = tl.full((BLOCK_K, BLOCK_N), 0.0, ACC)
            for r in tl.static_range(R):
                side = tl.full((BLOCK_K,), 1.0, ACC)
                if HAS_G:
                    side = side * tl.load(gam + (b * R + r) * C_OUT + co, mask=k_ok, other=0.0).to(ACC)
                if HAS_S:
                    side = side * tl.load(psi + (b * R + r) * TAPS + t).to(ACC)
                in_side = tl.full((BLOCK_N,), 1.0, ACC)
                if HAS_P:
                    in_side = tl.load(phi + (b * R + r) * CIN_G + offs_n, mask=n_ok, other=0.0).to(ACC)
                mod += side[:, None] * in_side[None, :]
            wt = wt * mod
        acc = tl.dot(a.to(DOT), wt.to(DOT), acc, input_precision=PRECISION)
    if R == 1 and HAS_P:
        acc = acc * tl.load(phi + b * CIN_G + offs_n, mask=n_ok, other=0.0).to(ACC)[None, :]
    ci = grp * CIN_G + offs_n
    out = dx + b.to(tl.int64) * sxb + ci[None, :] * sxc + (qd * sxd + qh * sxh + qw * sxw)[:, None]
    tl.store(out, acc.to(dx.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


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
    kd = t_n // (KH * KW)
    kh = (t_n // KW) % KH
    kw = t_n % KW
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
            od = offs_p // (HO * WO)
            oh = (offs_p // WO) % HO
            ow = offs_p % WO
            a = tl.load(dy_b + co[:, None] * sgc + (od * sgd + oh * sgh + ow * sgw)[None, :],
                        mask=m_ok[:, None] & p_ok[None, :], other=0.0)
            idd = od[:, None] * sd - pd + kd[None, :] * dd
            ih = oh[:, None] * sh - ph + kh[None, :] * dh
            iw = ow[:, None] * sw - pw + kw[None, :] * dw
            ok = p_ok[:, None] & n_ok[None, :] & (idd >= 0) & (idd < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            cols = tl.load(x_b + ci[None, :] * sxc + idd * sxd + ih * sxh + iw * sxw, mask=ok, other=0.0)
            acc = tl.dot(a.to(DOT), cols.to(DOT), acc, input_precision=PRECISION)
        # acc = dL/dW_b on this tile; G = acc * W feeds the component gradients
        g = acc * wt
        for r in tl.static_range(R):
            side = tl.full((BLOCK_N,), 1.0, ACC)
            if HAS_P:
                side = side * tl.load(phi + (b * R + r) * CIN_G + offs_n // TAPS, mask=n_ok, other=0.0).to(ACC)
            if HAS_S:
                side = side * tl.load(psi + (b * R + r) * TAPS + t_n, mask=n_ok, other=0.0).to(ACC)
            out_side = tl.full((BLOCK_M,), 1.0, ACC)
            if HAS_G:
                out_side = tl.load(gam + (b * R + r) * C_OUT + co, mask=m_ok, other=0.0).to(ACC)
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
    pid = tl.program_id(0)
    tiles_m = (DO * HO * WO + BLOCK_M - 1) // BLOCK_M
    b = pid // tiles_m
    offs_m = (pid % tiles_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels, all groups
    m_ok = offs_m < DO * HO * WO
    n_ok = offs_n < C_OUT
    od = offs_m // (HO * WO)
    oh = (offs_m // WO) % HO
    ow = offs_m % WO
    x_b = x + b.to(tl.int64) * sxb
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    for i in range(CIN_G):
        ci = (offs_n // COUT_G) * CIN_G + i
        for t in range(TAPS):
            kd = t // (KH * KW)
            kh = (t // KW) % KH
            kw = t % KW
            idd = od * sd - pd + kd * dd
            ih = oh * sh - ph + kh * dh
            iw = ow * sw - pw + kw * dw
            row_ok = m_ok & (idd >= 0) & (idd < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            wt = tl.load(w + offs_n * swo + i * swi + t * swt, mask=n_ok, other=0.0).to(ACC)
            mod = tl.full((BLOCK_N,), 0.0, ACC)
            for r in tl.static_range(R):
                m = tl.full((BLOCK_N,), 1.0, ACC)
                if HAS_G:
                    m = m * tl.load(gam + (b * R + r) * C_OUT + offs_n, mask=n_ok, other=0.0).to(ACC)
                if HAS_P:
                    m = m * tl.load(phi + (b * R + r) * CIN_G + i).to(ACC)
                if HAS_S:
                    m = m * tl.load(psi + (b * R + r) * TAPS + t).to(ACC)
                mod += m
            a = tl.load(x_b + (idd * sxd + ih * sxh + iw * sxw)[:, None] + ci[None, :] * sxc,
                        mask=row_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
            acc += a * (wt * mod).to(x.dtype.element_ty).to(ACC)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias + offs_n, mask=n_ok, other=0.0).to(ACC)[None, :]
    out = y + b.to(tl.int64) * syb + offs_n[None, :] * syc + (od * syd + oh * syh + ow * syw)[:, None]
    tl.store(out, acc.to(y.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def conv_backward_input_direct(
    dy, w, gam, phi, psi, dx,
    D, H, W, DO, HO, WO, KH, KW, TAPS, CIN_G, COUT_G, C_IN,
    sd, sh, sw, pd, ph, pw, dd, dh, dw,
    sgb, sgc, sgd, sgh, sgw, swo, swi, swt, sxb, sxc, sxd, sxh, sxw,
    R: tl.constexpr, HAS_G: tl.constexpr, HAS_P: tl.constexpr, HAS_S: tl.constexpr,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    tiles_m = (D * H * W + BLOCK_M - 1) // BLOCK_M
    b = pid // tiles_m
    offs_m = (pid % tiles_m) * BLOCK_M + tl.arange(0, BLOCK_M)  # input positions
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels, all groups
    C_OUT = (C_IN // CIN_G) * COUT_G
    m_ok = offs_m < D * H * W
    n_ok = offs_n < C_IN
    qd = offs_m // (H * W)
    qh = (offs_m // W) % H
    qw = offs_m % W
    i_loc = offs_n % CIN_G
    dy_b = dy + b.to(tl.int64) * sgb
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, ACC)
    for j in range(COUT_G):
        co = (offs_n // CIN_G) * COUT_G + j
        for t in range(TAPS):
            kd = t // (KH * KW)
            kh = (t // KW) % KH
            kw = t % KW
            td = qd + pd - kd * dd
            th = qh + ph - kh * dh
            tw = qw + pw - kw * dw
            row_ok = m_ok & (td >= 0) & (th >= 0) & (tw >= 0) & (td % sd == 0) & (th % sh == 0) & (tw % sw == 0)
            od = td // sd
            oh = th // sh
            ow = tw // sw
            row_ok = row_ok & (od < DO) & (oh < HO) & (ow < WO)
            row = tl.where(row_ok, od * sgd + oh * sgh + ow * sgw, 0)
            wt = tl.load(w + co * swo + i_loc * swi + t * swt, mask=n_ok, other=0.0).to(ACC)
            mod = tl.full((BLOCK_N,), 0.0, ACC)
            for r in tl.static_range(R):
                m = tl.full((BLOCK_N,), 1.0, ACC)
                if HAS_G:
                    m = m * tl.load(gam + (b * R + r) * C_OUT + co, mask=n_ok, other=0.0).to(ACC)
                if HAS_P:
                    m = m * tl.load(phi + (b * R + r) * CIN_G + i_loc, mask=n_ok, other=0.0).to(ACC)
                if HAS_S:
                    m = m * tl.load(psi + (b * R + r) * TAPS + t).to(ACC)
                mod += m
            a = tl.load(dy_b + row[:, None] + co[None, :] * sgc, mask=row_ok[:, None] & n_ok[None, :],
                        other=0.0).to(ACC)
            acc += a * (wt * mod).to(dy.dtype.element_ty).to(ACC)[None, :]
    out = dx + b.to(tl.int64) * sxb + offs_n[None, :] * sxc + (qd * sxd + qh * sxh + qw * sxw)[:, None]
    tl.store(out, acc.to(dx.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


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
    kd = t // (KH * KW)
    kh = (t // KW) % KH
    kw = t % KW
    n_ok = offs_n < C_OUT
    ci = (offs_n // COUT_G) * CIN_G + i
    dy_b = dy + b.to(tl.int64) * sgb
    x_b = x + b.to(tl.int64) * sxb
    acc = tl.full((BLOCK_N,), 0.0, ACC)
    for p0 in range(0, DO * HO * WO, BLOCK_M):
        offs_p = p0 + tl.arange(0, BLOCK_M)
        p_ok = offs_p < DO * HO * WO
        od = offs_p // (HO * WO)
        oh = (offs_p // WO) % HO
        ow = offs_p % WO
        idd = od * sd - pd + kd * dd
        ih = oh * sh - ph + kh * dh
        iw = ow * sw - pw + kw * dw
        ok = p_ok & (idd >= 0) & (idd < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(dy_b + (od * sgd + oh * sgh + ow * sgw)[:, None] + offs_n[None, :] * sgc,
                    mask=p_ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
        v = tl.load(x_b + (idd * sxd + ih * sxh + iw * sxw)[:, None] + ci[None, :] * sxc,
                    mask=ok[:, None] & n_ok[None, :], other=0.0).to(ACC)
        acc += tl.sum(a * v, axis=0)
    out = dw_b + (b.to(tl.int64) * C_OUT + offs_n) * (CIN_G * TAPS) + i * TAPS + t
    tl.store(out, acc, mask=n_ok)
