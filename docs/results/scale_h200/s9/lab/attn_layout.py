"""Lab (session 9): does the KV cache's layout set the fp8 decode attention's time?

The engine's cache is (slots, KVH, D) per layer: one head's 16-token page is 16 rows of D elements at a
stride of KVH * D, interleaved with the other head's rows. HEAD-MAJOR stores (KVH, slots, D): a head's page is
one contiguous run (2 KiB in fp8 at D 128). TWOH: one program per (sequence, split) reads both KV heads (two
loads a tile in flight). Same split-K GQA kernel as aha.rollout.fast.attention otherwise; merge kernel after.

    TRITON_INTERPRET=1 PYTHONPATH=src:benchmarks:docs/results/scale_h200/s8/lab python docs/results/scale_h200/s9/lab/attn_layout.py --check
    PYTHONPATH=src:benchmarks:docs/results/scale_h200/s8/lab python docs/results/scale_h200/s9/lab/attn_layout.py [--layouts | --stages]

--layouts: the engine's layout against HEAD-MAJOR (and TWOH, NOSCALE) at 544 / 2,176 / 4,352 tokens (call A);
no flag: CONV (fp16 dots: no per-element bf16 conversion) and VT (V pages token-minor) (call B);
--f8: CONV 3, both dots in e4m3 on Hopper's wgmma (q and p quantized: ~6e-2 error) (call E);
--stages: deeper pipelines and more warps (call C).
"""

import itertools
import sys

import torch
import triton
import triton.language as tl

from aha.rollout.fast.attention import _merge_kernel
from aha.rollout.fast.kv_cache import quantize


@triton.jit
def _deq(x, CONV: tl.constexpr, dt: tl.constexpr):
    """e4m3 -> the dot's type. CONV 0/1: the hardware conversion (to bf16 goes through fp16 per element);
    2: the bits moved into an fp16 (value * 2^-8, exact for every e4m3 incl. subnormals), integer ops only."""
    if CONV == 2:
        u = x.to(tl.uint8, bitcast=True).to(tl.uint16)
        return (((u & 0x80) << 8) | ((u & 0x7F) << 7)).to(tl.float16, bitcast=True)
    else:
        return x.to(dt)


@triton.jit
def _tile(q, qs, KC, VC, KS, VS, slot, nm, kh, skt, skh, sst, ssh, dd, scale, m_i, l_i, acc,
          QUANT: tl.constexpr, NOSCALE: tl.constexpr, CONV: tl.constexpr, VT: tl.constexpr, KVH: tl.constexpr,
          D: tl.constexpr, PAGE: tl.constexpr):  # fmt: skip
    kv_off = slot[:, None] * skt + kh * skh + dd[None, :]
    k = tl.load(KC + kv_off, mask=nm[:, None], other=0.0)
    if VT:  # (pages, KVH, D, PAGE): a page's tokens are contiguous for each d
        pg = slot // PAGE
        v_off = ((pg * KVH + kh) * D)[:, None] * PAGE + dd[None, :] * PAGE + (slot % PAGE)[:, None]
        v = tl.load(VC + v_off, mask=nm[:, None], other=0.0)
    else:
        v = tl.load(VC + kv_off, mask=nm[:, None], other=0.0)
    if QUANT and CONV != 3:
        k = _deq(k, CONV, q.dtype)
    s = tl.dot(q, tl.trans(k))
    if CONV == 3:  # q as e4m3 over its row scale: both operands fp8
        s = s * qs[:, None]
    if QUANT and CONV == 2:
        s = s * 256.0
    if QUANT and not NOSCALE:
        s = s * tl.load(KS + slot * sst + kh * ssh, mask=nm, other=0.0)[None, :]
    s = tl.where(nm[None, :], s * scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if CONV == 3:  # p * v_scale over the tile's largest scale, as e4m3 of [0, 448]
        vsc = tl.load(VS + slot * sst + kh * ssh, mask=nm, other=0.0)
        vmax = tl.maximum(tl.max(vsc, 0), 1e-30)
        p8 = (p * (vsc * (448.0 / vmax))[None, :]).to(tl.float8e4nv)
        pv = tl.dot(p8, v) * (vmax / 448.0)
    elif QUANT:
        v = _deq(v, CONV, q.dtype)
        if NOSCALE:
            pv = tl.dot(p.to(v.dtype), v)
        elif CONV == 0:
            pv = tl.dot((p * tl.load(VS + slot * sst + kh * ssh, mask=nm, other=0.0)[None, :]).to(v.dtype), v)
        else:  # fp16 p: the tile's scales over their max keep p * scale in [0, 1]
            vsc = tl.load(VS + slot * sst + kh * ssh, mask=nm, other=0.0)
            vmax = tl.maximum(tl.max(vsc, 0), 1e-30)
            pv = tl.dot((p * (vsc / vmax)[None, :]).to(v.dtype), v) * (vmax * (256.0 if CONV == 2 else 1.0))
    else:
        pv = tl.dot(p.to(v.dtype), v)
    acc = acc * alpha[:, None] + pv
    return m_new, l_i, acc


@triton.jit
def _store(MO, ML, b, heads, gm, dd, sp, NHT, m_i, l_i, acc, D: tl.constexpr, SPLITS: tl.constexpr):
    ok = l_i > 0
    o = acc / tl.where(ok, l_i, 1.0)[:, None]
    lse = tl.where(ok, m_i + tl.log(tl.where(ok, l_i, 1.0)), float("-inf"))
    row = (b * NHT + heads) * SPLITS + sp
    tl.store(MO + row[:, None] * D + dd[None, :], o, mask=gm[:, None])
    tl.store(ML + row, lse, mask=gm)


@triton.jit
def attn(Q, KC, VC, KS, VS, BT, LENS, MO, ML, scale, sqb, sqh, skt, skh, sst, ssh, sbt, NHT,
         G: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
         SPLITS: tl.constexpr, QUANT: tl.constexpr, NOSCALE: tl.constexpr, TWOH: tl.constexpr,
         CONV: tl.constexpr, VT: tl.constexpr, KVH: tl.constexpr):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    kh = tl.program_id(1)
    sp = tl.program_id(2)
    L = tl.load(LENS + b)
    per = tl.cdiv(tl.cdiv(L, SPLITS), BLOCK_N) * BLOCK_N
    start = sp * per
    end = tl.minimum(start + per, L)
    g = tl.arange(0, BLOCK_G)
    dd = tl.arange(0, D)
    gm = g < G
    h0 = kh * G + g
    q0 = tl.load(Q + b * sqb + h0[:, None] * sqh + dd[None, :], mask=gm[:, None], other=0.0)
    qs0 = tl.full([BLOCK_G], 1.0, tl.float32)
    if QUANT and CONV == 3:
        qf = q0.to(tl.float32)
        qs0 = tl.maximum(tl.max(tl.abs(qf), 1), 1e-30) / 448.0
        q0 = (qf / qs0[:, None]).to(tl.float8e4nv)
    elif QUANT and CONV > 0:
        q0 = q0.to(tl.float16)
    m0 = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l0 = tl.zeros([BLOCK_G], tl.float32)
    a0 = tl.zeros([BLOCK_G, D], tl.float32)
    if TWOH:
        h1 = G + g
        q1 = tl.load(Q + b * sqb + h1[:, None] * sqh + dd[None, :], mask=gm[:, None], other=0.0)
        qs1 = tl.full([BLOCK_G], 1.0, tl.float32)
        if QUANT and CONV == 3:
            qf1 = q1.to(tl.float32)
            qs1 = tl.maximum(tl.max(tl.abs(qf1), 1), 1e-30) / 448.0
            q1 = (qf1 / qs1[:, None]).to(tl.float8e4nv)
        elif QUANT and CONV > 0:
            q1 = q1.to(tl.float16)
        m1 = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l1 = tl.zeros([BLOCK_G], tl.float32)
        a1 = tl.zeros([BLOCK_G, D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nm = n < end
        page = tl.load(BT + b * sbt + n // PAGE, mask=nm, other=0).to(tl.int64)
        slot = page * PAGE + n % PAGE
        m0, l0, a0 = _tile(q0, qs0, KC, VC, KS, VS, slot, nm, kh, skt, skh, sst, ssh, dd, scale, m0, l0, a0,
                           QUANT, NOSCALE, CONV, VT, KVH, D, PAGE)  # fmt: skip
        if TWOH:
            m1, l1, a1 = _tile(q1, qs1, KC, VC, KS, VS, slot, nm, 1, skt, skh, sst, ssh, dd, scale, m1, l1, a1,
                               QUANT, NOSCALE, CONV, VT, KVH, D, PAGE)  # fmt: skip
    _store(MO, ML, b, h0, gm, dd, sp, NHT, m0, l0, a0, D, SPLITS)
    if TWOH:
        _store(MO, ML, b, h1, gm, dd, sp, NHT, m1, l1, a1, D, SPLITS)


def make(B, L, NH, KVH, D, page, dev, seed, quant, head_major):
    g = torch.Generator(device="cpu").manual_seed(seed)
    W = -(-L // page)
    bt = (torch.randperm(B * W, generator=g) + 1).view(B, W).to(torch.int32)
    slots = (B * W + 1) * page
    k = torch.randn(slots, KVH, D, generator=g) * 2
    v = torch.randn(slots, KVH, D, generator=g)
    q = torch.randn(B, NH, D, generator=g)
    lens = torch.full((B,), L, dtype=torch.int32)
    ks = vs = None
    if quant:
        k, ks = quantize(k)
        v, vs = quantize(v)
    elif dev != "cpu":
        k, v = k.bfloat16(), v.bfloat16()
    q = q.bfloat16() if dev != "cpu" else q
    if head_major:  # (KVH, slots, D) storage, viewed as (slots, KVH, D)
        k, v = (t.transpose(0, 1).contiguous().transpose(0, 1) for t in (k, v))
        if quant:
            ks, vs = (t.t().contiguous().t() for t in (ks, vs))
    out = [q, k, v, ks, vs, bt, lens]
    return [t.to(dev) if t is not None else None for t in out]


def run(q, k, v, ks, vs, bt, lens, page, cfg):
    BN, warps, stages, splits, twoh, noscale, conv, vt = cfg
    B, NH, D = q.shape
    KVH = k.shape[1]
    G = NH // KVH
    mo = torch.empty((B, NH, splits, D), dtype=torch.float32, device=q.device)
    ml = torch.empty((B, NH, splits), dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    quant = ks is not None
    global LAST
    LAST = attn[(B, 1 if twoh else KVH, splits)](
        q, k, v, ks if quant else q, vs if quant else q, bt, lens, mo, ml, D**-0.5,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), ks.stride(0) if quant else 0,
        ks.stride(1) if quant else 0, bt.stride(0), NH,
        G=G, BLOCK_G=64 if conv == 3 else max(16, triton.next_power_of_2(G)), D=D, PAGE=page, BLOCK_N=BN, SPLITS=splits,
        QUANT=quant, NOSCALE=bool(noscale), TWOH=bool(twoh), CONV=conv, VT=bool(vt), KVH=KVH, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    _merge_kernel[(B, NH)](mo, ml, out, out.stride(0), out.stride(1), NH=NH, D=D, BLOCK_D=D, SPLITS=splits)
    return out


def to_vt(args, page):
    """V (slots, KVH, D) -> (pages, KVH, D, PAGE) storage, flat (the kernel's VT layout)."""
    q, k, v, *rest = args
    S, KVH, D = v.shape
    return [q, k, v.reshape(-1, page, KVH, D).permute(0, 2, 3, 1).contiguous().reshape(S, KVH, D), *rest]


def reference(q, k, v, ks, vs, bt, lens, page):
    L = int(lens[0])
    p = torch.arange(L, device=q.device)
    slots = bt[:, p // page].long() * page + p % page
    K, V = k[slots].double(), v[slots].double()
    if ks is not None:
        K, V = K * ks[slots].double()[..., None], V * vs[slots].double()[..., None]
    G = q.shape[1] // k.shape[1]
    K, V = K.repeat_interleave(G, 2), V.repeat_interleave(G, 2)
    s = torch.einsum("bhd,blhd->bhl", q.double(), K) * q.shape[-1] ** -0.5
    return torch.einsum("bhl,blhd->bhd", s.softmax(-1), V)


def check():
    for quant, hm, twoh, conv, vt in itertools.product((False, True), (False, True), (0, 1), (0, 1, 2, 3), (0, 1)):
        if conv and not quant or vt and hm:
            continue
        args = make(2, 70, 4, 2, 16, 16, "cpu", 0, quant, hm)
        ref = reference(*args, 16)
        got = run(*(to_vt(args, 16) if vt else args), 16, (32, 4, 1, 2, twoh, 0, conv, vt)).double()
        err = ((got - ref).norm() / ref.norm()).item()
        print("quant", quant, "head-major", hm, "twoh", twoh, "conv", conv, "vt", vt, f"{err:.2e}")
        assert err < (8e-2 if conv == 3 else 1e-2)


def gtime(fn):
    from skinny import graph_time

    return graph_time(fn, reps=10)


def bench():
    B, NH, KVH, D, NC, page = 64, 12, 2, 128, 4, 16
    x0 = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    y0 = torch.empty_like(x0)
    bw = 2 * x0.numel() / (gtime(lambda: y0.copy_(x0)) / 1e3)
    del x0, y0
    print(f"{torch.cuda.get_device_name()} copy {bw / 1e12:.2f} TB/s; {B} rows, {NH}/{KVH} heads, D {D}, {NC} caches")
    print("| L | kv | block_n | warps | stages | splits | twoh | noscale | conv | vt | us | TB/s | rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    if "--stages" in sys.argv:
        return bench_stages(B, NH, KVH, D, NC, page)
    if "--layouts" in sys.argv:
        return bench_layouts(B, NH, KVH, D, NC, page)
    for L in (2176, 4352):
        for quant in (False, True):
            cases = [make(B, L, NH, KVH, D, page, "cuda", i, quant, False) for i in range(NC)]
            ref = reference(*cases[0], page)
            vts = [to_vt(c, page) for c in cases]
            nbytes = B * L * KVH * D * 2 * (1 if quant else 2)
            if quant and "--f8" in sys.argv:  # call E: fp8 tensor-core dots (wgmma) against the engine's
                grid = itertools.product((64, 128), (4,), (2, 3), (4, 8), (0,), (0,), (0, 3), (0, 1))
            elif quant:
                grid = itertools.product((64, 128), (4,), (1, 2, 3), (4, 8), (0,), (0,), (0, 1), (0, 1))
            else:
                grid = itertools.product((64,), (4,), (2, 3), (4,), (0,), (0,), (0,), (0, 1))
            for cfg in grid:
                if L != 2176 and cfg[2] == 1:
                    continue
                try:
                    use = vts if cfg[7] else cases
                    got = run(*use[0], page, cfg).double()
                    err = ((got - ref).norm() / ref.norm()).item()
                    t = gtime(lambda: [run(*a, page, cfg) for a in use]) * 1e3 / NC
                except Exception as e:  # noqa: BLE001
                    print(f"  skip {cfg}: {type(e).__name__} {str(e)[:100]}")
                    continue
                print(f"| {L} | {'fp8' if quant else 'bf16'} | " + " | ".join(str(c) for c in cfg)
                      + f" | {t:.1f} | {nbytes / t / 1e6:.2f} | {err:.1e} |")  # fmt: skip
                sys.stdout.flush()
            del cases, vts
            torch.cuda.empty_cache()


def bench_layouts(B, NH, KVH, D, NC, page):
    """Call A: the engine's (slots, KVH, D) against head-major storage, one or both KV heads a program."""
    print("| L | kv | layout | block_n | warps | stages | splits | twoh | noscale | us | TB/s | rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for L in (2176, 544, 4352):
        for quant, hm in itertools.product((False, True), (False, True)):
            cases = [make(B, L, NH, KVH, D, page, "cuda", i, quant, hm) for i in range(NC)]
            ref = reference(*cases[0], page)
            nbytes = B * L * KVH * D * 2 * (1 if quant else 2)
            grid = itertools.product((64, 128) if quant else (64,), (4,), (2, 3), (2, 4, 8), (0, 1),
                                     (0, 1) if quant else (0,))  # fmt: skip
            for BN, warps, stages, splits, twoh, noscale in grid:
                if L != 2176 and (stages != 3 or noscale):
                    continue
                cfg = (BN, warps, stages, splits, twoh, noscale, 0, 0)
                got = run(*cases[0], page, cfg).double()
                err = ((got - ref).norm() / ref.norm()).item()
                t = gtime(lambda: [run(*a, page, cfg) for a in cases]) * 1e3 / NC
                print(f"| {L} | {'fp8' if quant else 'bf16'} | {'head-major' if hm else 'engine'} | "
                      + " | ".join(str(c) for c in cfg[:6]) + f" | {t:.1f} | {nbytes / t / 1e6:.2f} | {err:.1e} |")  # fmt: skip
                sys.stdout.flush()
            del cases
            torch.cuda.empty_cache()


def bench_stages(B, NH, KVH, D, NC, page, L=4352):
    """Bytes in flight: deeper pipelines and more warps (fp8 engine layout, conv 0)."""
    print("| L | kv | block_n | warps | stages | splits | us | TB/s | regs | smem KB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for quant in (False, True):
        cases = [make(B, L, NH, KVH, D, page, "cuda", i, quant, False) for i in range(NC)]
        nbytes = B * L * KVH * D * 2 * (1 if quant else 2)
        grid = itertools.product((32, 64, 128) if quant else (64,), (4, 8), (3, 4, 5, 6), (4, 8, 16))
        for BN, warps, stages, splits in grid:
            cfg = (BN, warps, stages, splits, 0, 0, 0, 0)
            try:
                run(*cases[0], page, cfg)
                t = gtime(lambda: [run(*a, page, cfg) for a in cases]) * 1e3 / NC
                meta = LAST
            except Exception as e:  # noqa: BLE001
                print(f"  skip {cfg}: {type(e).__name__} {str(e)[:100]}")
                continue
            regs = getattr(meta, "n_regs", "?")
            smem = getattr(getattr(meta, "metadata", None), "shared", 0) / 1024
            print(f"| {L} | {'fp8' if quant else 'bf16'} | {BN} | {warps} | {stages} | {splits} | {t:.1f} | "
                  f"{nbytes / t / 1e6:.2f} | {regs} | {smem:.0f} |")  # fmt: skip
            sys.stdout.flush()
        del cases
        torch.cuda.empty_cache()


if __name__ == "__main__":
    check() if "--check" in sys.argv else bench()
