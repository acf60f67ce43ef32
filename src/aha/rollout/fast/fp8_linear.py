"""Decode GEMMs on float8 e4m3 weights (FastEngine weights_dtype="fp8"): y = x @ W^T (+ b).

W is stored as e4m3 with one fp32 scale per output channel, W ~ Wq * ws[:, None] (quantize_weight, taken from
the live weights at every generate call). x comes quantized by the kernel that produced it (the RMSNorm before
q/k/v and gate/up, the SiLU product before down): e4m3 with one fp32 scale per row, x ~ xq * xs
(xs = amax / 448; quantize_rows). The MMA runs on two fp8 operands:
    y = ((xq @ Wq^T) * xs[:, None] * ws[None, :] + b).to(dtype)          (fp32 accumulation)
A split-K program takes whole blocks and a second kernel adds the fp32 partial sums (and the bias), or, with
partials=True, the RMSNorm that reads the output does (rms_norm_fp8). linear_partials runs the same kernel on
model-dtype operands (the decode's o_proj). The torch path (the CPU, AHA_FAST_TRITON=0) multiplies the
dequantized operands in fp32: the reference the kernel is tested against.

Why: at 64 rows a decode step's GEMMs read their weights (~1.2 ms of a 1.5B model's 2.5 ms step); e4m3 halves
the bytes, and only the fp8 MMA gains at these shapes (docs/results/scale_h200/s11: cuBLAS's row-scaled fp8 and
a bf16 MMA on converted weights are slower than bf16; s12: quantizing x inside the GEMM, once per output tile,
is slower than bf16 too, hence the producers; a scale per 128 columns of x, applied block by block, costs
~15% of the gain against one per row, fp8lin_64.txt). e4m3 is floating point: a row's values 1,000x below its
largest keep their 3 mantissa bits, so a scale per row tolerates the outliers of LLM activations. The price:
each GEMM's output moves by ~4% of its norm on random data, so the engine samples from a perturbed policy
(algorithm.rollout_is corrects for it).
"""

from __future__ import annotations

import os

import torch

from ..._triton import next_pow2, pdl_args, tl, triton, use_triton
from .kv_cache import FP8 as E4M3

# x (M, K) -> e4m3 (M, K) and fp32 scales (M,): the KV cache's quantization, one scale per row
from .kv_cache import quantize as quantize_rows
from .layers import _rows, rms_norm, silu_mul

if triton is not None:
    from ..._triton import pdl_start
    from .layers import _rms_row

# A PDL launch prefetches the program's weight rows into L2 (prefetch.global.L2, a 128-byte line each) before it
# waits for the kernel that writes x: the weights are most of a decode GEMM's bytes, and no kernel writes them.
LINE = 128

# silu_mul_fp8 holds a row of up to this many columns in registers (one pass); longer rows take two passes
SILU_ROW = 16384
# The Triton interpreter's fp32 -> e4m3 conversion drops the carry into the exponent (7.99 -> 4.0, where a GPU
# gives 8.0): under it the kernels round to e4m3 values in fp32 first (_round_e4m3), so the conversion is exact.
# Its tl.dot on bf16 operands is wrong too (Triton 3.9 here; results ~1e10 off): the GEMM upcasts them there.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def quantize_weight(w: torch.Tensor, out: torch.Tensor, scale: torch.Tensor, chunk: int = 8192):
    """w (N, K) -> out (N, K) e4m3 and scale (N,) fp32 in place, w ~ out * scale[:, None] (quantize_rows); rows
    in chunks so a large matrix (an lm head) needs no full fp32 copy."""
    for a in range(0, w.shape[0], chunk):
        out[a : a + chunk], scale[a : a + chunk] = quantize_rows(w[a : a + chunk])


def fp8_linear_torch(xq, xs, wq, ws, bias=None, dtype=torch.bfloat16) -> torch.Tensor:
    """The reference: both operands dequantized, an fp32 product."""
    y = (xq.float() * xs[:, None]) @ (wq.float() * ws[:, None]).T
    if bias is not None:
        y = y + bias.float()
    return y.to(dtype)


if triton is not None:

    @triton.jit
    def _round_e4m3(v):
        """v (|v| <= 448) rounded to the nearest e4m3 value, ties to even, in fp32 arithmetic. Only under the
        Triton interpreter, whose fp32 -> e4m3 conversion drops the carry into the exponent (7.99 -> 4.0): the
        value is then exact and the conversion cannot round. The GPU converts in hardware."""
        bits = v.to(tl.int32, bitcast=True)
        # the exponent of the e4m3 step at |v| (subnormals below 2^-6)
        e = tl.maximum(((bits >> 23) & 0xFF) - 127, -6) - 3
        step = ((e + 127) << 23).to(tl.float32, bitcast=True)
        big = 8388608.0  # 2^23: adding it rounds |v| / step to an integer, ties to even
        r = ((tl.abs(v) / step + big) - big) * step
        return tl.where(v < 0, -r, r)

    @triton.jit
    def _fp8_linear_kernel(
        X,
        XS,
        W,
        WS,
        B,
        O,
        P,
        M,
        N,
        K,
        sxm,
        swn,
        som,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        SPLIT_K: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        LINES: tl.constexpr = 1,
        LINE_ELEMS: tl.constexpr = 128,
        PDL: tl.constexpr = False,
        SCALED: tl.constexpr = True,
        ROUND: tl.constexpr = False,
    ):
        # SCALED: e4m3 operands with their row scales XS, WS; else both in the model dtype (linear_partials)
        pn = tl.program_id(0)
        pm = tl.program_id(1)
        pk = tl.program_id(2)
        rm = pm * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pn * BLOCK_N + tl.arange(0, BLOCK_N)
        mm = rm < M
        nm = rn < N
        per = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K  # whole blocks per split
        start = pk * per
        end = tl.minimum(start + per, K)
        # PDL: this program's weights into L2 while the previous kernel finishes, LINES lines of LINE bytes
        # (LINE_ELEMS elements) a row
        if PDL:
            rows = tl.minimum(rn, N - 1).to(tl.int64) * swn
            cols = tl.minimum(start + tl.arange(0, LINES) * LINE_ELEMS, tl.maximum(end - 1, 0))
            tl.inline_asm_elementwise(
                "prefetch.global.L2 [$1];",
                "=r,l",
                [W + rows[:, None] + cols[None, :]],
                dtype=tl.int32,
                is_pure=False,
                pack=1,
            )
        pdl_start(PDL)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(start, end, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            km = rk < end
            x = tl.load(
                X + rm[:, None] * sxm + rk[None, :], mask=mm[:, None] & km[None, :], other=0.0
            )
            w = tl.load(
                W + rn[:, None] * swn + rk[None, :], mask=nm[:, None] & km[None, :], other=0.0
            )
            # the interpreter's bf16 dot is wrong (INTERPRETED): it gets the exact fp32 products instead
            if not SCALED and ROUND:
                x, w = x.to(tl.float32), w.to(tl.float32)
            acc = tl.dot(x, tl.trans(w), acc)
        if SCALED:
            acc = acc * tl.load(XS + rm, mask=mm, other=0.0)[:, None]
            acc = acc * tl.load(WS + rn, mask=nm, other=0.0)[None, :]
        om = mm[:, None] & nm[None, :]
        if SPLIT_K == 1:
            if HAS_BIAS:
                acc += tl.load(B + rn, mask=nm, other=0.0).to(tl.float32)[None, :]
            tl.store(O + rm[:, None] * som + rn[None, :], acc.to(O.dtype.element_ty), mask=om)
        else:
            tl.store(P + (pk * M + rm[:, None]) * N + rn[None, :], acc, mask=om)

    @triton.jit
    def _row_scale(amax, QS):
        """A row's e4m3 scale from its absolute values (kv_cache.quantize's), stored at QS and returned."""
        sc = tl.maximum(tl.max(amax, 0), 1e-30) / 448.0
        tl.store(QS, sc)
        return sc

    @triton.jit
    def _quantize_store(Q, y, m, sc, ROUND: tl.constexpr):
        """y (fp32, 0 where masked) / sc -> e4m3 at Q (masked by m)."""
        q = y / sc
        if ROUND:
            q = _round_e4m3(q)
        tl.store(Q, q.to(Q.dtype.element_ty), mask=m)

    @triton.jit
    def _rms_fp8_kernel(
        X, R, W, Q, QS, ROUT, sx, sr, sq, sro, sxs, N, eps,
        HAS_RES: tl.constexpr, BLOCK: tl.constexpr, ROUND: tl.constexpr, PDL: tl.constexpr = False,
        SPLITS: tl.constexpr = 0,
    ):  # fmt: skip
        # layers._rms_kernel with its output quantized per row. SPLITS > 0: X holds a split-K GEMM's fp32 partial
        # sums (SPLITS rows sxs apart), added in order and rounded to the model dtype as _split_sum_kernel
        # stores them, so the sum needs no launch of its own
        pdl_start(PDL)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < N
        if SPLITS > 0:
            h = tl.load(X + row * sx + cols, mask=m, other=0.0)
            for s in tl.static_range(1, SPLITS):
                h += tl.load(X + s * sxs + row * sx + cols, mask=m, other=0.0)
            x = h.to(ROUT.dtype.element_ty)
            y = _rms_row(x, R, W, ROUT, row, sx, sr, sro, cols, m, N, eps, HAS_RES, True)
        else:
            y = _rms_row(X, R, W, ROUT, row, sx, sr, sro, cols, m, N, eps, HAS_RES, False)
        y = y.to(ROUT.dtype.element_ty).to(tl.float32)  # the model-dtype output HF would give
        _quantize_store(Q + row * sq + cols, y, m, _row_scale(tl.abs(y), QS + row), ROUND)

    @triton.jit
    def _silu_y(G, U, row, sg, su, off, m):
        g = tl.load(G + row * sg + off, mask=m, other=0.0).to(tl.float32)
        u = tl.load(U + row * su + off, mask=m, other=0.0)
        a = (g / (1.0 + tl.exp(-g))).to(u.dtype).to(tl.float32)
        # the model-dtype product HF would give
        return (a * u.to(tl.float32)).to(u.dtype).to(tl.float32)

    @triton.jit
    def _silu_mul_fp8_kernel(
        G,
        U,
        Q,
        QS,
        n,
        sg,
        su,
        sq,
        BLOCK: tl.constexpr,
        ROUND: tl.constexpr,
        PDL: tl.constexpr = False,
    ):
        # layers._silu_mul_kernel with its output quantized per row: one program a row, the row in registers
        # when it fits one BLOCK, else two passes (the second reads the row from L2)
        pdl_start(PDL)
        row = tl.program_id(0).to(tl.int64)
        if BLOCK >= n:
            off = tl.arange(0, BLOCK)
            m = off < n
            y = _silu_y(G, U, row, sg, su, off, m)
            _quantize_store(Q + row * sq + off, y, m, _row_scale(tl.abs(y), QS + row), ROUND)
        else:
            amax = tl.zeros((BLOCK,), tl.float32)
            for c0 in range(0, n, BLOCK):
                off = c0 + tl.arange(0, BLOCK)
                amax = tl.maximum(amax, tl.abs(_silu_y(G, U, row, sg, su, off, off < n)))
            sc = _row_scale(amax, QS + row)
            for c0 in range(0, n, BLOCK):
                off = c0 + tl.arange(0, BLOCK)
                m = off < n
                _quantize_store(
                    Q + row * sq + off, _silu_y(G, U, row, sg, su, off, m), m, sc, ROUND
                )

    @triton.jit
    def _split_sum_kernel(
        P, B, O, M, N, som,
        SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False,
    ):  # fmt: skip
        pdl_start(PDL)
        m = tl.program_id(0)
        rn = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        nm = rn < N
        acc = tl.zeros((BLOCK,), tl.float32)
        for s in tl.static_range(SPLIT_K):
            acc += tl.load(P + (s * M + m) * N + rn, mask=nm, other=0.0)
        if HAS_BIAS:
            acc += tl.load(B + rn, mask=nm, other=0.0).to(tl.float32)
        tl.store(O + m * som + rn, acc.to(O.dtype.element_ty), mask=nm)


def _rows_fp8(x: torch.Tensor):
    T, N = x.shape
    q = torch.empty((T, N), dtype=E4M3, device=x.device)
    return q, torch.empty((T,), dtype=torch.float32, device=x.device)


def rms_norm_fp8(x, weight, eps: float, residual=None):
    """layers.rms_norm with the normed output quantized for fp8_linear: x (T, H) [+ residual] ->
    ((xq (T, H) e4m3, xs (T,) fp32), new residual (T, H)). x may be a split-K GEMM's fp32 partial sums
    (S, T, H) (fp8_linear or linear_partials with partials=True), with a residual: their sum in its dtype."""
    splits = x.shape[0] if x.dim() == 3 else 0
    if splits and residual is None:
        raise ValueError("rms_norm_fp8: partial sums need the residual (its dtype is the sum's)")
    if not use_triton(x):
        if splits:
            x = sum_partials(x, residual.dtype)
        y, r = rms_norm(x, weight, eps, residual)  # its torch path
        return quantize_rows(y), r
    T, N = x.shape[-2:]
    q, qs = _rows_fp8(residual if splits else x)
    rout = torch.empty_like(residual) if residual is not None else x
    res = residual if residual is not None else x
    _rms_fp8_kernel[(T,)](
        x,
        res,
        weight,
        q,
        qs,
        rout,
        x.stride(-2),
        res.stride(0),
        q.stride(0),
        rout.stride(0),
        x.stride(0) if splits else 0,
        N,
        eps,
        HAS_RES=residual is not None,
        BLOCK=next_pow2(N),
        ROUND=INTERPRETED,
        num_warps=4,
        SPLITS=splits,
        **pdl_args(x),
    )
    return (q, qs), rout


def sum_partials(part: torch.Tensor, dtype) -> torch.Tensor:
    """(S, M, N) fp32 partial sums -> (M, N) in dtype, added in order from 0 (as the kernels add them)."""
    acc = torch.zeros_like(part[0])
    for p in part:
        acc += p
    return acc.to(dtype)


def silu_mul_fp8(gate, up):
    """layers.silu_mul with the product quantized for fp8_linear: gate, up (T, I) (rows may be strided) ->
    (e4m3 (T, I), fp32 scales (T,))."""
    if not use_triton(gate):
        return quantize_rows(silu_mul(gate, up))  # its torch path
    gate, up = _rows(gate), _rows(up)
    T, n = up.shape
    q, qs = _rows_fp8(up)
    _silu_mul_fp8_kernel[(T,)](
        gate,
        up,
        q,
        qs,
        n,
        gate.stride(0),
        up.stride(0),
        q.stride(0),
        BLOCK=min(SILU_ROW, next_pow2(n)),
        ROUND=INTERPRETED,
        num_warps=16 if n > 4096 else 8,
        **pdl_args(up),
    )
    return q, qs


def config(M: int, N: int, K: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages): the best of a sweep at 64 rows on an H200
    (docs/results/scale_h200/s11 and s12): wide matrices (gate/up, the lm head) in 64-column tiles, narrow ones
    in 32-column tiles, split four ways along a long K (down)."""
    if N >= 8192:
        return 64, 128, 1, 4, 4
    if K >= 4096:
        return 64, 256, 4, 4, 6
    return 32, 256, 1, 4, 6


def config_plain(M: int, N: int, K: int) -> tuple[int, int, int, int, int]:
    """config() for linear_partials (model-dtype operands, o_proj at 64 rows): narrow tiles split along K, the
    partial sums added by the RMSNorm that reads them."""
    return 32, 128, 2, 4, 4


def fp8_linear(
    xq,
    xs,
    wq,
    ws,
    bias=None,
    dtype=torch.bfloat16,
    cfg: tuple | None = None,
    partials: bool = False,
):
    """xq (M, K) e4m3 with xs (M,) fp32 (a producer's quantize_rows), wq (N, K) e4m3, ws (N,) fp32, bias (N,) or
    None -> (M, N) in dtype. partials (no bias): a split-K product is returned as its fp32 partial sums
    (S, M, N), for rms_norm_fp8 to add (one launch fewer)."""
    if not use_triton(xq):
        return fp8_linear_torch(xq, xs, wq, ws, bias, dtype)
    cfg = cfg or config(xq.shape[0], wq.shape[0], xq.shape[1])
    return _linear(xq, xs, wq, ws, bias, dtype, cfg, partials, True)


def linear_partials(x, w, bias=None, partials: bool = True, cfg: tuple | None = None):
    """x (M, K) @ w (N, K)^T (+ bias) with both in the model dtype, through the fp8 GEMM's kernel (PDL: it
    prefetches its weights while the attention before it runs; cuBLAS cannot join that chain). -> the fp32
    partial sums (S, M, N) with partials and no bias (rms_norm_fp8 adds them), else (M, N) in x's dtype. The torch
    path (the CPU) is F.linear. Meant for bf16/fp16: on a GPU, Triton multiplies fp32 operands in TF32."""
    if not use_triton(x):
        return torch.nn.functional.linear(x, w, bias)
    M, K = x.shape
    cfg = cfg or config_plain(M, w.shape[0], K)
    return _linear(x, x, w, w, bias, x.dtype, cfg, partials, False)


def _linear(x, xs, w, ws, bias, dtype, cfg, partials: bool, scaled: bool):
    M, K = x.shape
    N = w.shape[0]
    bn, bk, split, warps, stages = cfg
    bm = min(64, max(16, next_pow2(M)))
    keep = partials and split > 1 and bias is None
    out = x if keep else torch.empty((M, N), dtype=dtype, device=x.device)
    part = torch.empty((split, M, N), dtype=torch.float32, device=x.device) if split > 1 else out
    b = bias if bias is not None else ws
    grid = (triton.cdiv(N, bn), triton.cdiv(M, bm), split)
    pdl = pdl_args(x)
    per = triton.cdiv(triton.cdiv(K, split), bk) * bk  # the kernel's K range per split
    line = LINE // w.element_size()  # elements a prefetched line holds
    _fp8_linear_kernel[grid](
        x,
        xs,
        w,
        ws,
        b,
        out,
        part,
        M,
        N,
        K,
        x.stride(0),
        w.stride(0),
        out.stride(0),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        SPLIT_K=split,
        HAS_BIAS=bias is not None,
        LINES=next_pow2(triton.cdiv(per, line)) if pdl["PDL"] else 1,
        LINE_ELEMS=line,
        num_warps=warps,
        num_stages=stages,
        SCALED=scaled,
        ROUND=INTERPRETED,
        **pdl,
    )
    if keep:
        return part
    if split > 1:
        _split_sum_kernel[(M, triton.cdiv(N, 1024))](
            part,
            b,
            out,
            M,
            N,
            out.stride(0),
            SPLIT_K=split,
            HAS_BIAS=bias is not None,
            BLOCK=1024,
            num_warps=4,
            **pdl,
        )
    return out
