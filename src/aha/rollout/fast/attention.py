"""Attention over the paged KV cache.

Decode (one new query token per sequence): out_h = softmax(q_h . K^T * scale) V over the sequence's first
`seq_len` cache positions, K/V read through the block table (position p lives in slot
block_table[p // page] * page + p % page). The Triton kernel is split-K GQA decoding: one program per
(sequence, KV head, split) loads the G = NH / KVH query heads that share the KV head as one (G, D) tile, so each
K/V byte is read once for all G heads; splits of the context are merged with their log-sum-exp
(out = sum_s w_s o_s, w_s = exp(lse_s - max lse) / sum), by the last split program of a (sequence, KV head) to
finish (an atomic counter each; the engine's decode) or by a second kernel. The torch fallback gathers K/V and
runs plain softmax.
An fp8 cache (kv_cache.py) is read as e4m3 values and one scale per (token, KV head): s = (q . k8) * k_scale,
and p * v_scale weighs the value rows, so dequantized K/V never exist in memory. On a GPU the CUDA kernel of
attention_fp8.py serves it (this Triton kernel is as slow on e4m3 as on bf16); the Triton kernel where it cannot
be built.

Prefill (whole prompts): PyTorch SDPA, causal, on right-padded prompts (a prompt's real queries never see
the padding that follows it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..._triton import next_pow2, tl, triton, use_triton
from . import attention_fp8
from .kv_cache import gather

if triton is not None:

    @triton.jit
    def _decode_kernel(
        Q,
        KC,
        VC,
        KS,
        VS,
        BT,
        LENS,
        O,
        MO,
        ML,
        CNT,
        scale,
        sqb,
        sqh,
        skt,
        skh,
        sst,
        sbt,
        sob,
        soh,
        G: tl.constexpr,
        BLOCK_G: tl.constexpr,
        D: tl.constexpr,
        BLOCK_D: tl.constexpr,
        PAGE: tl.constexpr,
        BLOCK_N: tl.constexpr,
        SPLITS: tl.constexpr,
        IEEE: tl.constexpr,
        QUANT: tl.constexpr,
        FUSED: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        kh = tl.program_id(1)
        sp = tl.program_id(2)
        L = tl.load(LENS + b)
        per = tl.cdiv(tl.cdiv(L, SPLITS), BLOCK_N) * BLOCK_N
        start = sp * per
        end = tl.minimum(start + per, L)
        g = tl.arange(0, BLOCK_G)
        dd = tl.arange(0, BLOCK_D)
        gm = g < G
        dm = dd < D
        heads = kh * G + g
        q = tl.load(
            Q + b * sqb + heads[:, None] * sqh + dd[None, :],
            mask=gm[:, None] & dm[None, :],
            other=0.0,
        )
        m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        for n0 in range(start, end, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            nm = n < end
            page = tl.load(BT + b * sbt + n // PAGE, mask=nm, other=0).to(tl.int64)
            slot = page * PAGE + n % PAGE
            kv_off = slot[:, None] * skt + kh * skh + dd[None, :]
            kv_m = nm[:, None] & dm[None, :]
            k = tl.load(KC + kv_off, mask=kv_m, other=0.0)
            if QUANT:
                k = k.to(q.dtype)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            if QUANT:
                s = s * tl.load(KS + slot * sst + kh, mask=nm, other=0.0)[None, :]
            s = tl.where(nm[None, :], s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(VC + kv_off, mask=kv_m, other=0.0)
            pv = p
            if QUANT:
                v = v.to(q.dtype)
                pv = p * tl.load(VS + slot * sst + kh, mask=nm, other=0.0)[None, :]
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(pv.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(pv.to(v.dtype), v)
            m_i = m_new
        out_m = gm[:, None] & dm[None, :]
        if SPLITS == 1:
            o = acc / l_i[:, None]
            tl.store(
                O + b * sob + heads[:, None] * soh + dd[None, :],
                o.to(O.dtype.element_ty),
                mask=out_m,
            )
        else:
            ok = l_i > 0  # an empty split (short sequence) contributes weight exp(-inf) = 0
            o = acc / tl.where(ok, l_i, 1.0)[:, None]
            lse = tl.where(ok, m_i + tl.log(tl.where(ok, l_i, 1.0)), float("-inf"))
            base = (b * (G * tl.num_programs(1)) + heads) * SPLITS  # MO (B, NH, SPLITS, D)
            tl.store(MO + (base + sp)[:, None] * BLOCK_D + dd[None, :], o, mask=out_m)
            tl.store(ML + base + sp, lse, mask=gm)
            if FUSED:
                # The last split of (sequence, KV head) to finish merges them all (no merge kernel): every
                # thread's partials are stored (barrier) before the counter's release; its acquire orders
                # the reads after it. The merger resets the counter for the next layer and step.
                tl.debug_barrier()
                cnt = CNT + b * tl.num_programs(1) + kh
                if tl.atomic_add(cnt, 1, sem="acq_rel") == SPLITS - 1:
                    mx = tl.full([BLOCK_G], float("-inf"), tl.float32)
                    for j in tl.static_range(SPLITS):
                        lj = tl.load(
                            ML + base + j, mask=gm, other=float("-inf"), cache_modifier=".cg"
                        )
                        mx = tl.maximum(mx, lj)
                    mx = tl.where(mx > float("-inf"), mx, 0.0)  # padded heads: no split, no NaN
                    out = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
                    wsum = tl.zeros([BLOCK_G], tl.float32)
                    for j in tl.static_range(SPLITS):
                        lj = tl.load(
                            ML + base + j, mask=gm, other=float("-inf"), cache_modifier=".cg"
                        )
                        w = tl.exp(lj - mx)
                        oj = tl.load(
                            MO + (base + j)[:, None] * BLOCK_D + dd[None, :],
                            mask=out_m,
                            other=0.0,
                            cache_modifier=".cg",
                        )
                        out += w[:, None] * oj
                        wsum += w
                    o = out / tl.where(wsum > 0, wsum, 1.0)[:, None]
                    tl.store(
                        O + b * sob + heads[:, None] * soh + dd[None, :],
                        o.to(O.dtype.element_ty),
                        mask=out_m,
                    )
                    tl.atomic_xchg(cnt, 0)

    @triton.jit
    def _merge_kernel(
        MO,
        ML,
        O,
        sob,
        soh,
        NH: tl.constexpr,
        D: tl.constexpr,
        BLOCK_D: tl.constexpr,
        SPLITS: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        s = tl.arange(0, SPLITS)
        dd = tl.arange(0, BLOCK_D)
        row = (b * NH + h) * SPLITS + s
        lse = tl.load(ML + row)
        w = tl.exp(lse - tl.max(lse, 0))
        w = w / tl.sum(w, 0)
        o = tl.load(MO + row[:, None] * BLOCK_D + dd[None, :])
        out = tl.sum(w[:, None] * o, 0)
        tl.store(O + b * sob + h * soh + dd, out.to(O.dtype.element_ty), mask=dd < D)


def decode_splits(batch: int, num_kv_heads: int, num_sms: int = 132, fp8: bool = False) -> int:
    """Context splits so that (batch * KV heads * splits) programs fill the GPU about twice (Triton), or, for
    the CUDA fp8 kernel (attention_fp8.warps_for), once: the most splits that keep the blocks within one per
    multiprocessor, 1 from about one block per multiprocessor up (an H200, 64 rows: 1 split for 2 or 4 KV
    heads, 8 for 8 rows x 2 KV heads; docs/results/scale_h200/s10)."""
    blocks = max(1, batch * num_kv_heads)
    if fp8:
        return max(1, min(16, next_pow2(num_sms // blocks + 1) // 2))
    want = -(-2 * num_sms // blocks)
    return max(1, min(16, next_pow2(want)))


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    page_size: int,
    scale: float,
    splits: int = 1,
    block_n: int | None = None,
    num_warps: int | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    counters: torch.Tensor | None = None,
) -> torch.Tensor:
    """q (B, NH, D), caches (num_slots, KVH, D), block_table (B, W) int32, seq_lens (B,) int32 -> (B, NH, D).
    An fp8 cache comes with its scales k_scale/v_scale (num_slots, KVH) fp32. With splits > 1, `counters`
    (>= B * KVH int32 zeros, left zero after each call) lets the last split of each sequence and KV head merge
    the splits itself instead of a second kernel (a launch less a layer: ~2-3 us on an H200).

    Defaults from graph-timed variants on an H200 (256 rows x 384 tokens): head dim 64 -> 128 keys per
    iteration, 8 warps (15 us, 78% of copy bandwidth); head dim 128 -> 64 keys, 4 warps (30 us, 79%). fp8,
    head dim 128 (64 rows x 2,176 tokens, docs/results/scale_h200/s7): 128 keys, 4 warps, 42.4 us against 59.4
    with 64 keys and 42.5 for bf16 at its default: as fast as bf16, not twice (even without the scale loads:
    41.1 us). The CUDA kernel (attention_fp8.py) takes 30.2 us there; it runs instead wherever it builds."""
    B, NH, D = q.shape
    KVH = k_cache.shape[1]
    G = NH // KVH
    if not use_triton(q):
        return _decode_torch(
            q, k_cache, v_cache, block_table, seq_lens, page_size, scale, k_scale, v_scale
        )
    out = torch.empty_like(q)
    BLOCK_D = max(16, next_pow2(D))
    if splits > 1:
        mo = torch.empty((B, NH, splits, BLOCK_D), dtype=torch.float32, device=q.device)
        ml = torch.empty((B, NH, splits), dtype=torch.float32, device=q.device)
    else:
        mo = ml = out
    quant = k_scale is not None
    fused = splits > 1 and counters is not None
    if fused and (counters.numel() < B * KVH or counters.dtype != torch.int32):
        raise ValueError(
            f"counters: {counters.numel()} {counters.dtype} entries, needs B * KVH = {B * KVH} int32"
        )
    if quant and attention_fp8.usable(q, KVH, page_size, splits):
        args = (q, k_cache, v_cache, k_scale, v_scale, block_table, seq_lens, page_size, scale)
        if attention_fp8.decode_fp8(*args, out, mo, ml, splits, counters if fused else None):
            if splits > 1 and not fused:
                _merge(mo, ml, out, splits)
            return out
    _decode_kernel[(B, KVH, splits)](
        q,
        k_cache,
        v_cache,
        k_scale if quant else q,
        v_scale if quant else q,
        block_table,
        seq_lens,
        out,
        mo,
        ml,
        counters if fused else seq_lens,
        scale,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_scale.stride(0) if quant else 0,
        block_table.stride(0),
        out.stride(0),
        out.stride(1),
        G=G,
        BLOCK_G=max(16, next_pow2(G)),
        D=D,
        BLOCK_D=BLOCK_D,
        PAGE=page_size,
        BLOCK_N=block_n or (128 if D <= 64 or quant else 64),
        SPLITS=splits,
        IEEE=q.dtype == torch.float32,
        QUANT=quant,
        FUSED=fused,
        num_warps=num_warps or (8 if D <= 64 else 4),
        num_stages=2,
    )
    if splits > 1 and not fused:
        _merge(mo, ml, out, splits)
    return out


def _merge(mo: torch.Tensor, ml: torch.Tensor, out: torch.Tensor, splits: int) -> None:
    B, NH, D = out.shape
    _merge_kernel[(B, NH)](
        mo,
        ml,
        out,
        out.stride(0),
        out.stride(1),
        NH=NH,
        D=D,
        BLOCK_D=mo.shape[-1],
        SPLITS=splits,
        num_warps=4,
    )


def _decode_torch(
    q, k_cache, v_cache, block_table, seq_lens, page_size, scale, k_scale=None, v_scale=None
):
    B, NH, D = q.shape
    KVH = k_cache.shape[1]
    W = block_table.shape[1]
    T = W * page_size  # every position the table can hold
    p = torch.arange(T, device=q.device)
    slots = block_table[:, p // page_size].long() * page_size + p % page_size  # (B, T)
    k = gather(k_cache, k_scale, slots, torch.float32)  # (B, T, KVH, D)
    v = gather(v_cache, v_scale, slots, torch.float32)
    qg = q.float().view(B, KVH, NH // KVH, D)  # (B, KVH, G, D)
    s = torch.einsum("bhgd,bthd->bhgt", qg, k) * scale  # (B, KVH, G, T)
    s = s.masked_fill((p[None, :] >= seq_lens[:, None].long())[:, None, None, :], float("-inf"))
    o = torch.einsum("bhgt,bthd->bhgd", torch.softmax(s, dim=-1), v)
    return o.reshape(B, NH, D).to(q.dtype)


def prefill_meta(lens: list[int], device) -> tuple:
    """Index tensors for prefill_attention, built once per prefill batch: the padded gather idx (P, Tm) into
    the packed tokens and the rows of the padded (P*Tm) layout that hold real tokens."""
    L = torch.tensor(lens)
    T, Tm = int(L.sum()), int(L.max())
    ar = torch.arange(Tm)
    idx = ((L.cumsum(0) - L)[:, None] + ar[None, :]).clamp(max=T - 1)  # (P, Tm)
    flat = (ar[None, :] < L[:, None]).reshape(-1).nonzero().squeeze(1)  # (T,)
    return len(lens), Tm, idx.to(device, non_blocking=True), flat.to(device, non_blocking=True)


def prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: tuple, scale: float
) -> torch.Tensor:
    """Causal attention within each prompt. q (T, NH, D), k/v (T, KVH, D) packed prompts -> (T, NH, D)."""
    T, NH, D = q.shape
    G = NH // k.shape[1]
    P, Tm, idx, flat = meta
    qp = q[idx].transpose(1, 2)  # (P, NH, Tm, D)
    kp = k[idx].transpose(1, 2).repeat_interleave(G, dim=1)
    vp = v[idx].transpose(1, 2).repeat_interleave(G, dim=1)
    o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=scale)  # (P, NH, Tm, D)
    return o.transpose(1, 2).reshape(P * Tm, NH, D)[flat]
