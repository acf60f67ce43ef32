"""Fused per-token layers of the decoder, each a Triton kernel with a torch fallback that mirrors HF exactly.

- rms_norm:  r = x + residual (rounded to the model dtype, as HF adds in bf16), then
             y = w * (r * rsqrt(mean(r^2) + eps)).to(dtype)      (HF Qwen2/Llama/Qwen3 RMSNorm, fp32 inside)
- rope_cache: optional per-head RMSNorm of q and k (Qwen3), rotary embedding
             q' = q * cos + rotate_half(q) * sin  (rotate_half(x) = cat(-x2, x1)), then k', v written into the
             paged KV cache at flat slot indices (an fp8 cache: quantized per token and head with their scales).
             One kernel instead of ~15 small ops per layer.
- silu_mul:  silu(gate) * up (the SwiGLU MLP's middle), rounded like HF (silu rounded, then the product).

The Triton versions compute in fp32 and round once, so in bf16 they may differ from HF by one rounding step.
"""

from __future__ import annotations

import torch

from ..._triton import next_pow2, pdl_args, tl, triton, use_triton
from .kv_cache import quantize, raw

# --------------------------------------------------------------------------------------------- torch paths


def _rms_torch(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# --------------------------------------------------------------------------------------------- triton kernels

if triton is not None:
    from ..._triton import pdl_start

    @triton.jit
    def _rms_row(
        X, R, W, ROUT, row, sx, sr, sro, cols, m, N, eps, HAS_RES: tl.constexpr, LOADED: tl.constexpr
    ):  # fmt: skip
        """One row of rms_norm: the residual sum stored (HAS_RES); returns w * normed in fp32, normed rounded
        to the model dtype first (as HF does). LOADED: X is the row itself (in registers), not a pointer."""
        if LOADED:
            x = X
        else:
            x = tl.load(X + row * sx + cols, mask=m, other=0.0)
        if HAS_RES:
            r = tl.load(R + row * sr + cols, mask=m, other=0.0)
            x = (x.to(tl.float32) + r.to(tl.float32)).to(ROUT.dtype.element_ty)
            tl.store(ROUT + row * sro + cols, x, mask=m)
        xf = x.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(xf * xf, 0) / N + eps)
        y = (xf * rstd).to(x.dtype).to(tl.float32)
        return tl.load(W + cols, mask=m, other=0.0).to(tl.float32) * y

    @triton.jit
    def _rms_kernel(
        X, R, W, OUT, ROUT, sx, sr, so, sro, N, eps,
        HAS_RES: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False,
    ):  # fmt: skip
        pdl_start(PDL)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < N
        y = _rms_row(X, R, W, ROUT, row, sx, sr, sro, cols, m, N, eps, HAS_RES, False)
        tl.store(OUT + row * so + cols, y.to(OUT.dtype.element_ty), mask=m)

    @triton.jit
    def _rope_heads(
        X,
        XO,
        XS,
        c1,
        c2,
        s1,
        s2,
        NW,
        eps,
        sx_head,
        so_head,
        NH: tl.constexpr,
        HALF: tl.constexpr,
        BH: tl.constexpr,
        BHALF: tl.constexpr,
        NORM: tl.constexpr,
        QUANT: tl.constexpr,
    ):
        # X, XO (XS: its per-head fp8 scales) point at this token's first head; heads are (NH, 2*HALF) rows.
        h = tl.arange(0, BH)
        d = tl.arange(0, BHALF)
        msk = (h < NH)[:, None] & (d < HALF)[None, :]
        p1 = h[:, None] * sx_head + d[None, :]
        x1 = tl.load(X + p1, mask=msk, other=0.0)
        x2 = tl.load(X + p1 + HALF, mask=msk, other=0.0)
        if NORM:  # Qwen3 q_norm / k_norm over the head dim, fp32 inside, rounded like HF
            f1 = x1.to(tl.float32)
            f2 = x2.to(tl.float32)
            rstd = tl.rsqrt((tl.sum(f1 * f1, 1) + tl.sum(f2 * f2, 1)) / (2 * HALF) + eps)
            w1 = tl.load(NW + d, mask=d < HALF, other=0.0).to(tl.float32)
            w2 = tl.load(NW + HALF + d, mask=d < HALF, other=0.0).to(tl.float32)
            x1 = (w1[None, :] * (f1 * rstd[:, None]).to(x1.dtype).to(tl.float32)).to(x1.dtype)
            x2 = (w2[None, :] * (f2 * rstd[:, None]).to(x2.dtype).to(tl.float32)).to(x2.dtype)
        f1 = x1.to(tl.float32)
        f2 = x2.to(tl.float32)
        o1 = f1 * c1[None, :] - f2 * s1[None, :]
        o2 = f2 * c2[None, :] + f1 * s2[None, :]
        p2 = h[:, None] * so_head + d[None, :]
        if QUANT:  # rounded to the model dtype (as the torch path quantizes it), then e4m3 per head
            o1 = o1.to(x1.dtype).to(tl.float32)
            o2 = o2.to(x2.dtype).to(tl.float32)
            amax = tl.maximum(tl.max(tl.abs(o1), 1), tl.max(tl.abs(o2), 1))
            sc = tl.maximum(amax, 1e-30) / 448.0
            o1 = o1 / sc[:, None]
            o2 = o2 / sc[:, None]
            tl.store(XS + h, sc, mask=h < NH)
        tl.store(XO + p2, o1.to(XO.dtype.element_ty), mask=msk)
        tl.store(XO + p2 + HALF, o2.to(XO.dtype.element_ty), mask=msk)

    @triton.jit
    def _rope_cache_kernel(
        Q,
        K,
        V,
        COS,
        SIN,
        POS,
        SLOT,
        QO,
        KC,
        VC,
        KS,
        VS,
        QW,
        KW,
        eps,
        sq,
        sk,
        sv,
        scos,
        sqo,
        skc,
        sks,
        NH: tl.constexpr,
        KVH: tl.constexpr,
        HALF: tl.constexpr,
        BH: tl.constexpr,
        BKH: tl.constexpr,
        BHALF: tl.constexpr,
        NORM: tl.constexpr,
        QUANT: tl.constexpr,
        PDL: tl.constexpr = False,
    ):
        pdl_start(PDL)
        t = tl.program_id(0).to(tl.int64)
        pos = tl.load(POS + t).to(tl.int64)
        slot = tl.load(SLOT + t).to(tl.int64)
        d = tl.arange(0, BHALF)
        dm = d < HALF
        c1 = tl.load(COS + pos * scos + d, mask=dm, other=0.0).to(tl.float32)
        c2 = tl.load(COS + pos * scos + HALF + d, mask=dm, other=0.0).to(tl.float32)
        s1 = tl.load(SIN + pos * scos + d, mask=dm, other=0.0).to(tl.float32)
        s2 = tl.load(SIN + pos * scos + HALF + d, mask=dm, other=0.0).to(tl.float32)
        _rope_heads(
            Q + t * sq,
            QO + t * sqo,
            KS,
            c1,
            c2,
            s1,
            s2,
            QW,
            eps,
            2 * HALF,
            2 * HALF,
            NH,
            HALF,
            BH,
            BHALF,
            NORM,
            False,
        )
        _rope_heads(
            K + t * sk,
            KC + slot * skc,
            KS + slot * sks,
            c1,
            c2,
            s1,
            s2,
            KW,
            eps,
            2 * HALF,
            2 * HALF,
            KVH,
            HALF,
            BKH,
            BHALF,
            NORM,
            QUANT,
        )
        h = tl.arange(0, BKH)
        dd = tl.arange(0, 2 * BHALF)
        msk = (h < KVH)[:, None] & (dd < 2 * HALF)[None, :]
        off = h[:, None] * (2 * HALF) + dd[None, :]
        v = tl.load(V + t * sv + off, mask=msk, other=0.0)
        if QUANT:
            vf = v.to(tl.float32)
            sc = tl.maximum(tl.max(tl.abs(vf), 1), 1e-30) / 448.0
            tl.store(VS + slot * sks + h, sc, mask=h < KVH)
            tl.store(VC + slot * skc + off, (vf / sc[:, None]).to(VC.dtype.element_ty), mask=msk)
        else:
            tl.store(VC + slot * skc + off, v, mask=msk)

    @triton.jit
    def _silu_mul_kernel(G, U, O, n, sg, su, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
        pdl_start(PDL)
        row = tl.program_id(0).to(tl.int64)
        off = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = off < n
        g = tl.load(G + row * sg + off, mask=m, other=0.0).to(tl.float32)
        u = tl.load(U + row * su + off, mask=m, other=0.0)
        a = (g / (1.0 + tl.exp(-g))).to(u.dtype).to(tl.float32)
        tl.store(O + row * n + off, (a * u.to(tl.float32)).to(O.dtype.element_ty), mask=m)


# --------------------------------------------------------------------------------------------- public ops


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, H) [+ residual (T, H)] -> (normed (T, H), new residual (T, H))."""
    if not use_triton(x):
        r = x if residual is None else residual + x
        return _rms_torch(r, weight, eps), r
    T, N = x.shape
    out = torch.empty_like(x)
    rout = torch.empty_like(x) if residual is not None else x
    res = residual if residual is not None else x
    _rms_kernel[(T,)](
        x,
        res,
        weight,
        out,
        rout,
        x.stride(0),
        res.stride(0),
        out.stride(0),
        rout.stride(0),
        N,
        eps,
        HAS_RES=residual is not None,
        BLOCK=next_pow2(N),
        num_warps=4,
        **pdl_args(x),
    )
    return out, rout


def rope_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: torch.Tensor,
    slot: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    q_norm_w: torch.Tensor | None = None,
    k_norm_w: torch.Tensor | None = None,
    eps: float = 1e-6,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """q (T, NH*D), k/v (T, KVH*D) (rows may be strided), cos/sin (max_pos, D), pos/slot (T,), caches
    (num_slots, KVH, D); with an fp8 cache its scales k_scale/v_scale (num_slots, KVH) fp32.

    Writes rotated k and v to cache[slot] (fp8: quantized per head, kv_cache.quantize); returns rotated q
    (T, NH, D)."""
    T = q.shape[0]
    D = k_cache.shape[-1]
    if not use_triton(q):
        qh, kh = q.view(T, num_heads, D), k.view(T, num_kv_heads, D)
        if q_norm_w is not None:
            qh, kh = _rms_torch(qh, q_norm_w, eps), _rms_torch(kh, k_norm_w, eps)
        c, s = cos[pos].unsqueeze(1), sin[pos].unsqueeze(1)  # (T, 1, D)
        qh = qh * c + _rotate_half(qh) * s
        kh = kh * c + _rotate_half(kh) * s
        _write(k_cache, k_scale, slot, kh)
        _write(v_cache, v_scale, slot, v.view(T, num_kv_heads, D))
        return qh
    q, k, v = _rows(q), _rows(k), _rows(v)  # column slices of a packed q/k/v GEMM are read in place
    qo = torch.empty((T, num_heads, D), dtype=q.dtype, device=q.device)
    norm = q_norm_w is not None
    qw = q_norm_w if norm else q
    kw = k_norm_w if norm else k
    _rope_cache_kernel[(T,)](
        q,
        k,
        v,
        cos,
        sin,
        pos,
        slot,
        qo,
        k_cache,
        v_cache,
        qo if k_scale is None else k_scale,
        qo if v_scale is None else v_scale,
        qw,
        kw,
        eps,
        q.stride(0),
        k.stride(0),
        v.stride(0),
        cos.stride(0),
        qo.stride(0),
        k_cache.stride(0),
        0 if k_scale is None else k_scale.stride(0),
        NH=num_heads,
        KVH=num_kv_heads,
        HALF=D // 2,
        BH=next_pow2(num_heads),
        BKH=next_pow2(num_kv_heads),
        BHALF=next_pow2(D // 2),
        NORM=norm,
        QUANT=k_scale is not None,
        num_warps=4,
        **pdl_args(q),
    )
    return qo


def _write(
    cache: torch.Tensor, scale: torch.Tensor | None, slot: torch.Tensor, x: torch.Tensor
) -> None:
    """cache[slot] = x (T, KVH, D), quantized to fp8 with its scales when the cache has them."""
    if scale is None:
        cache.index_copy_(0, slot, x.to(cache.dtype))
        return
    x8, sc = quantize(x)
    raw(cache).index_copy_(0, slot, raw(x8))
    scale.index_copy_(0, slot, sc)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, both (T, I); rows may be strided (the two halves of one packed gate/up GEMM)."""
    if not use_triton(gate):
        return torch.nn.functional.silu(gate) * up
    gate, up = _rows(gate), _rows(up)
    T, n = up.shape
    out = torch.empty((T, n), dtype=up.dtype, device=up.device)
    BLOCK = 1024
    grid = (T, triton.cdiv(n, BLOCK))
    _silu_mul_kernel[grid](
        gate, up, out, n, gate.stride(0), up.stride(0), BLOCK=BLOCK, num_warps=4, **pdl_args(up)
    )
    return out


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x (T, N) as the kernels read it: any row stride, unit column stride (a copy only when it is not)."""
    return x if x.stride(-1) == 1 else x.contiguous()
