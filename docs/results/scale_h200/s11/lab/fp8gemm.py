"""Lab (session 11): decode GEMMs with float8 e4m3 weights at 64 rows, against bf16 cuBLAS.

Variants per shape (28 distinct weight copies in one CUDA graph, no L2 reuse):
  F.linear            bf16 cuBLAS (the engine today)
  scaled_mm row       torch._scaled_mm, x e4m3 per-row scale, W e4m3 per-output-channel scale, bf16 out
  scaled_mm row fa    the same with use_fast_accum
  scaled_mm tensor    one scale each
  triton w8a16        Triton skinny GEMM: W e4m3 (per-channel scale) converted to bf16 in registers, x bf16
  triton w8a8         Triton skinny GEMM: both e4m3 (fp8 MMA), per-row x scale, per-channel W scale

    TRITON_INTERPRET=1 python .lab/fp8gemm.py --check     # CPU correctness of the Triton kernel
    python .lab/fp8gemm.py --rows 64                       # GPU timing table
"""

import argparse
import itertools
import statistics
import sys

import torch
import triton
import triton.language as tl

E4M3 = torch.float8_e4m3fn


@triton.jit
def w8_kernel(
    X, XS, W, WS, B, O, P, M, N, K, sxm, swn, som,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, A8: tl.constexpr,
):  # fmt: skip
    pn = tl.program_id(0)
    pk = tl.program_id(1)
    rm = tl.arange(0, BLOCK_M)
    rn = pn * BLOCK_N + tl.arange(0, BLOCK_N)
    mm = rm < M
    nm = rn < N
    per = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    start = pk * per
    end = tl.minimum(start + per, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(start, end, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        km = rk < end
        x = tl.load(X + rm[:, None] * sxm + rk[None, :], mask=mm[:, None] & km[None, :], other=0.0)
        w = tl.load(W + rn[:, None] * swn + rk[None, :], mask=nm[:, None] & km[None, :], other=0.0)
        if A8:
            acc = tl.dot(x, tl.trans(w), acc)
        else:
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    acc = acc * tl.load(WS + rn, mask=nm, other=0.0)[None, :]
    if A8:
        acc = acc * tl.load(XS + rm, mask=mm, other=0.0)[:, None]
    om = mm[:, None] & nm[None, :]
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(B + rn, mask=nm, other=0.0).to(tl.float32)[None, :]
        tl.store(O + rm[:, None] * som + rn[None, :], acc.to(O.dtype.element_ty), mask=om)
    else:
        tl.store(P + (pk * M + rm[:, None]) * N + rn[None, :], acc, mask=om)


@triton.jit
def reduce_kernel(P, B, O, M, N, som, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0)
    rn = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    nm = rn < N
    acc = tl.zeros((BLOCK,), tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(P + (s * M + m) * N + rn, mask=nm, other=0.0)
    if HAS_BIAS:
        acc += tl.load(B + rn, mask=nm, other=0.0).to(tl.float32)
    tl.store(O + m * som + rn, acc.to(O.dtype.element_ty), mask=nm)


def w8(x, xs, w, ws, b, cfg, out, part=None, a8=False):
    BN, BK, SK, warps, stages = cfg
    M, K = x.shape
    N = w.shape[0]
    BM = max(16, triton.next_power_of_2(M))
    w8_kernel[(triton.cdiv(N, BN), SK)](
        x, xs if xs is not None else ws, w, ws, b if b is not None else ws, out,
        part if part is not None else out, M, N, K, x.stride(0), w.stride(0), out.stride(0),
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, SPLIT_K=SK, HAS_BIAS=b is not None, A8=a8,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    if SK > 1:
        reduce_kernel[(M, triton.cdiv(N, 1024))](
            part, b if b is not None else part, out, M, N, out.stride(0),
            SPLIT_K=SK, HAS_BIAS=b is not None, BLOCK=1024, num_warps=4,
        )  # fmt: skip
    return out


def quant_rows(t):
    """(R, K) -> e4m3 (R, K), fp32 scales (R,): t ~= q * s."""
    s = t.float().abs().amax(1).clamp(min=1e-12) / 448.0
    return (t.float() / s[:, None]).to(E4M3), s


def check():
    torch.manual_seed(0)
    for (N, K, bias), M, a8 in itertools.product([(48, 64, True), (40, 200, False)], [3, 16], [False, True]):
        for cfg in [(16, 32, 1, 4, 1), (32, 64, 2, 4, 1), (16, 64, 3, 4, 1)]:
            x, w = torch.randn(M, K), torch.randn(N, K)
            b = torch.randn(N) if bias else None
            wq, ws = quant_rows(w)
            if a8:
                xq, xs = quant_rows(x)
                ref = (xq.double() * xs.double()[:, None]) @ (wq.double() * ws.double()[:, None]).T
            else:
                xq, xs = x, None
                ref = x.double() @ (wq.double() * ws.double()[:, None]).T
            if bias:
                ref = ref + b.double()
            out = torch.empty(M, N)
            part = torch.empty(cfg[2], M, N)
            got = w8(xq, xs, wq, ws, b, cfg, out, part, a8).double()
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            assert err < 1e-3, (N, K, M, cfg, a8, err)
            print("ok", N, K, M, cfg, a8, f"{err:.1e}")


def graph_time(fn, reps=20):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    ts = []
    for _ in range(reps):
        ev[0].record()
        g.replay()
        ev[1].record()
        torch.cuda.synchronize()
        ts.append(ev[0].elapsed_time(ev[1]))
    return statistics.median(ts)


SHAPES = {  # name: (N, K, bias)
    "1.5b qkv": (2048, 1536, True),
    "1.5b o": (1536, 1536, False),
    "1.5b gate_up": (17920, 1536, False),
    "1.5b down": (1536, 8960, False),
    "1.5b lm_head": (151936, 1536, False),
    "0.5b qkv": (1152, 896, True),
    "0.5b o": (896, 896, False),
    "0.5b gate_up": (9728, 896, False),
    "0.5b down": (896, 4864, False),
    "7b qkv": (4608, 3584, True),
    "7b o": (3584, 3584, False),
    "7b gate_up": (37888, 3584, False),
    "7b down": (3584, 18944, False),
}


def bench(rows, layers, shapes, sweep):
    dev = "cuda"
    x0 = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    y0 = torch.empty_like(x0)
    bw = (2 * x0.numel()) / (graph_time(lambda: y0.copy_(x0)) / 1e3)
    x0 = y0 = None
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s, rows {rows}, {layers} distinct weights per shape, torch {torch.__version__}")
    print("| shape | variant | us/call | vs bf16 bound | vs F.linear | rel err vs bf16 |")
    print("|---|---|---|---|---|---|")
    for name in shapes:
        N, K, bias = SHAPES[name]
        L = 4 if "lm_head" in name else layers
        torch.manual_seed(0)
        ws = [torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(L)]
        bs = [torch.randn(N, device=dev, dtype=torch.bfloat16) * 0.1 if bias else None for _ in range(L)]
        x = torch.randn(rows, K, device=dev, dtype=torch.bfloat16)
        out = torch.empty(rows, N, device=dev, dtype=torch.bfloat16)
        bound = N * K * 2 / bw * 1e6
        ref = torch.nn.functional.linear(x.float(), ws[0].float(), bs[0].float() if bias else None)
        res, errs = {}, {}

        def err_of(y):
            return ((y.float() - ref).norm() / ref.norm()).item()

        res["F.linear"] = graph_time(lambda: [torch.nn.functional.linear(x, w, b) for w, b in zip(ws, bs)]) * 1e3 / L
        errs["F.linear"] = err_of(torch.nn.functional.linear(x, ws[0], bs[0]))
        q = [quant_rows(w) for w in ws]
        ws = None
        torch.cuda.empty_cache()
        wq = [a for a, _ in q]
        wsc = [s for _, s in q]
        xq, xs = quant_rows(x)
        one = torch.ones((), device=dev)
        for label, kw in [
            ("scaled_mm row", dict(use_fast_accum=False)),
            ("scaled_mm row fa", dict(use_fast_accum=True)),
        ]:
            try:
                def f(kw=kw):
                    return [
                        torch._scaled_mm(xq, a.t(), scale_a=xs[:, None], scale_b=s[None, :], bias=b,
                                         out_dtype=torch.bfloat16, **kw)
                        for a, s, b in zip(wq, wsc, bs)
                    ]
                errs[label] = err_of(f()[0])
                res[label] = graph_time(f) * 1e3 / L
            except Exception as e:  # noqa: BLE001
                print(f"  {name} {label}: {type(e).__name__}: {str(e)[:200]}")
        try:
            def ft():
                return [torch._scaled_mm(xq, a.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16) for a in wq]
            ft()
            res["scaled_mm tensor (no bias/scales)"] = graph_time(ft) * 1e3 / L
        except Exception as e:  # noqa: BLE001
            print(f"  {name} tensor: {type(e).__name__}: {str(e)[:200]}")
        for a8 in (False, True):
            label = "triton w8a8" if a8 else "triton w8a16"
            xin, xsc = (xq, xs) if a8 else (x, None)
            best = []
            for bn, bk, sk in itertools.product((32, 64, 128), (64, 128, 256), (1, 2, 4)):
                progs = -(-N // bn) * sk
                if progs < 48 or progs > 4000 or bk * sk > K:
                    continue
                cfg = (bn, bk, sk, 4, 4)
                part = torch.empty((sk, rows, N), dtype=torch.float32, device=dev) if sk > 1 else None
                try:
                    y = w8(xin, xsc, wq[0], wsc[0], bs[0], cfg, out, part, a8)
                    e = err_of(y)
                    if e > 0.1:
                        print(f"  BAD {name} {label} {cfg} err {e:.2e}")
                        continue
                    t = graph_time(lambda: [w8(xin, xsc, a, s, b, cfg, out, part, a8) for a, s, b in zip(wq, wsc, bs)])
                    best.append((t * 1e3 / L, cfg, e, part))
                except Exception as ex:  # noqa: BLE001
                    print(f"  skip {label} {cfg}: {type(ex).__name__} {str(ex)[:80]}")
            best.sort(key=lambda r: r[0])
            fine = []
            for _, (bn, bk, sk, _, _), e, part in best[:2]:
                for warps, stages in itertools.product((4, 8), (3, 4, 6)):
                    cfg = (bn, bk, sk, warps, stages)
                    try:
                        t = graph_time(lambda: [w8(xin, xsc, a, s, b, cfg, out, part, a8) for a, s, b in zip(wq, wsc, bs)])
                        fine.append((t * 1e3 / L, cfg, e))
                    except Exception as ex:  # noqa: BLE001
                        print(f"  skip {label} {cfg}: {type(ex).__name__} {str(ex)[:80]}")
            fine.sort(key=lambda r: r[0])
            if fine:
                t, cfg, e = fine[0]
                res[f"{label} {cfg}"] = t
                errs[f"{label} {cfg}"] = e
        for k, v in res.items():
            e = errs.get(k)
            print(f"| {name} | {k} | {v:.2f} | {v / bound:.2f} | {v / res['F.linear']:.2f} | {'' if e is None else f'{e:.1e}'} |")
        print(f"| {name} | bf16 bound ({N * K * 2 / 1e6:.1f} MB) | {bound:.2f} | 1.00 | {bound / res['F.linear']:.2f} | |")
        sys.stdout.flush()
        wq = wsc = q = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--shapes", default=",".join(SHAPES))
    a = p.parse_args()
    if a.check:
        check()
    else:
        bench(a.rows, a.layers, a.shapes.split(","), True)
