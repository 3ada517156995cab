"""The Triton source of :mod:`hamburger.kernels` (undecorated: ``kernels`` jits them on first use, so that
``TRITON_INTERPRET`` set by then is honoured). Imported only when a fused step runs."""

import triton.language as tl


def codes_kernel(
    x_ptr,
    d_ptr,
    c_ptr,
    g_ptr,
    eps,
    n,
    dim,
    rank,
    sxb,
    sxd,
    sxn,
    sdb,
    sdd,
    sdr,
    scb,
    scn,
    scr,
    sgb,
    sgr,
    sgs,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
    LOW: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    SMALL_PRECISION: tl.constexpr,
):
    # Cᵀ (N, R) <- Cᵀ ⊙ (XᵀD) ⊘ (Cᵀ G + ε) for BLOCK_N positions of batch b
    b = tl.program_id(1)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rr = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, dim, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        xt = tl.load(
            x_ptr + b * sxb + rk[None, :] * sxd + rn[:, None] * sxn,
            mask=(rn[:, None] < n) & (rk[None, :] < dim),
            other=0.0,
        )  # (BLOCK_N, BLOCK_K): Xᵀ
        dt = tl.load(
            d_ptr + b * sdb + rk[:, None] * sdd + rr[None, :] * sdr,
            mask=(rk[:, None] < dim) & (rr[None, :] < rank),
            other=0.0,
        )  # (BLOCK_K, BLOCK_R)
        if LOW:  # bf16 operands (X may be bf16 already), fp32 accumulation
            xt, dt = xt.to(tl.bfloat16), dt.to(tl.bfloat16)
            if UPCAST:  # the interpreter's bf16 dot is wrong: the same rounded values, in fp32
                xt, dt = xt.to(tl.float32), dt.to(tl.float32)
        acc += tl.dot(xt, dt, input_precision=PRECISION)
    tile = (rn[:, None] < n) & (rr[None, :] < rank)
    c_at = c_ptr + b * scb + rn[:, None] * scn + rr[None, :] * scr
    c = tl.load(c_at, mask=tile, other=0.0)  # (BLOCK_N, BLOCK_R), fp32
    g = tl.load(
        g_ptr + b * sgb + rr[:, None] * sgr + rr[None, :] * sgs,
        mask=(rr[:, None] < rank) & (rr[None, :] < rank),
        other=0.0,
    )  # (BLOCK_R, BLOCK_R)
    den = tl.dot(c, g, input_precision=SMALL_PRECISION) + eps
    tl.store(c_at, c * acc / den, mask=tile)


def bases_kernel(
    x_ptr,
    d_ptr,
    c_ptr,
    h_ptr,
    w_ptr,
    eps,
    n,
    dim,
    rank,
    span,
    parts,
    sxb,
    sxd,
    sxn,
    sdb,
    sdd,
    sdr,
    scb,
    scn,
    scr,
    shb,
    shr,
    shs,
    swp,
    swb,
    swd,
    swr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    LOW: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    SMALL_PRECISION: tl.constexpr,
    MODE: tl.constexpr,
):
    # for BLOCK_D channels of batch b, by MODE: 0, D (dim, R) <- D ⊙ (XCᵀ) ⊘ (D H + ε), H = CᵀC, the product over all
    # N; 1, the p-th slice of that product (positions p·span …) to the workspace W[p]; 2, the update from the sum of
    # the ``parts`` slices in W, taken in order (deterministic)
    b, p = tl.program_id(1), tl.program_id(2)
    rd = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    rr = tl.arange(0, BLOCK_R)
    tile = (rd[:, None] < dim) & (rr[None, :] < rank)
    acc = tl.zeros((BLOCK_D, BLOCK_R), dtype=tl.float32)
    if MODE == 2:
        for q in range(0, parts):
            acc += tl.load(w_ptr + q * swp + b * swb + rd[:, None] * swd + rr[None, :] * swr, mask=tile, other=0.0)
    else:
        end = tl.minimum(n, (p + 1) * span)
        for n0 in range(p * span, end, BLOCK_N):
            rn = n0 + tl.arange(0, BLOCK_N)
            x = tl.load(
                x_ptr + b * sxb + rd[:, None] * sxd + rn[None, :] * sxn,
                mask=(rd[:, None] < dim) & (rn[None, :] < end),
                other=0.0,
            )  # (BLOCK_D, BLOCK_N)
            c = tl.load(
                c_ptr + b * scb + rn[:, None] * scn + rr[None, :] * scr,
                mask=(rn[:, None] < end) & (rr[None, :] < rank),
                other=0.0,
            )  # (BLOCK_N, BLOCK_R)
            if LOW:
                x, c = x.to(tl.bfloat16), c.to(tl.bfloat16)
                if UPCAST:
                    x, c = x.to(tl.float32), c.to(tl.float32)
            acc += tl.dot(x, c, input_precision=PRECISION)
    if MODE == 1:
        tl.store(w_ptr + p * swp + b * swb + rd[:, None] * swd + rr[None, :] * swr, acc, mask=tile)
    else:
        d_at = d_ptr + b * sdb + rd[:, None] * sdd + rr[None, :] * sdr
        d = tl.load(d_at, mask=tile, other=0.0)
        h = tl.load(
            h_ptr + b * shb + rr[:, None] * shr + rr[None, :] * shs,
            mask=(rr[:, None] < rank) & (rr[None, :] < rank),
            other=0.0,
        )
        den = tl.dot(d, h, input_precision=SMALL_PRECISION) + eps
        tl.store(d_at, d * acc / den, mask=tile)
