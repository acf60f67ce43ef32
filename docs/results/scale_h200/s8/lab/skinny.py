"""Lab: a Triton skinny GEMM (M <= 64 decode rows) against cuBLAS on Qwen2.5 decode GEMM shapes.

out (M, N) = x (M, K) @ W (N, K)^T [+ bias]. Each program owns BLOCK_N output columns (and one of SPLIT_K
slices of K); SPLIT_K > 1 writes fp32 partials (SPLIT_K, M, N) summed by a reduce kernel (or, as timed
separately, by the consumer). SWAP computes the tile as W_tile @ x^T (weights in the MMA's M slot).

    TRITON_INTERPRET=1 PYTHONPATH=src:benchmarks python docs/results/scale_h200/s8/lab/skinny.py --check      # CPU correctness
    PYTHONPATH=src:benchmarks python docs/results/scale_h200/s8/lab/skinny.py --search                         # GPU: timing table
"""

import argparse
import itertools
import os
import statistics
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def skinny_kernel(
    X, W, B, O, P, M, N, K, sxm, swn, som,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, SWAP: tl.constexpr,
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
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(start, end, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        km = rk < end
        x = tl.load(X + rm[:, None] * sxm + rk[None, :], mask=mm[:, None] & km[None, :], other=0.0)
        w = tl.load(W + rn[:, None] * swn + rk[None, :], mask=nm[:, None] & km[None, :], other=0.0)
        if SWAP:
            acc = tl.dot(w, tl.trans(x), acc)
        else:
            acc = tl.dot(x, tl.trans(w), acc)
    if SWAP:
        acc = tl.trans(acc)
    om = mm[:, None] & nm[None, :]
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(B + rn, mask=nm, other=0.0).to(tl.float32)[None, :]
        tl.store(O + rm[:, None] * som + rn[None, :], acc.to(O.dtype.element_ty), mask=om)
    else:
        tl.store(P + (pk * M + rm[:, None]) * N + rn[None, :], acc, mask=om)


@triton.jit
def reduce_kernel(
    P, B, O, M, N, som, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr
):
    m = tl.program_id(0)
    rn = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    nm = rn < N
    acc = tl.zeros((BLOCK,), tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(P + (s * M + m) * N + rn, mask=nm, other=0.0)
    if HAS_BIAS:
        acc += tl.load(B + rn, mask=nm, other=0.0).to(tl.float32)
    tl.store(O + m * som + rn, acc.to(O.dtype.element_ty), mask=nm)


def skinny(x, w, b=None, cfg=(32, 128, 1, 4, 4, 0), out=None, part=None, reduce=True):
    BN, BK, SK, warps, stages, swap = cfg
    M, K = x.shape
    N = w.shape[0]
    BM = max(16, triton.next_power_of_2(M))
    if out is None:
        out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if SK > 1 and part is None:
        part = torch.empty((SK, M, N), dtype=torch.float32, device=x.device)
    skinny_kernel[(triton.cdiv(N, BN), SK)](
        x, w, b if b is not None else w, out, part if part is not None else out, M, N, K,
        x.stride(0), w.stride(0), out.stride(0),
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, SPLIT_K=SK, HAS_BIAS=b is not None, SWAP=bool(swap),
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    if SK > 1 and reduce:
        RB = 1024
        reduce_kernel[(M, triton.cdiv(N, RB))](
            part, b if b is not None else part, out, M, N, out.stride(0),
            SPLIT_K=SK, HAS_BIAS=b is not None, BLOCK=RB, num_warps=4,
        )  # fmt: skip
    return out


SHAPES = {  # name: (N, K, bias)
    "1.5b qkv": (2048, 1536, True),
    "1.5b o": (1536, 1536, False),
    "1.5b gate_up": (17920, 1536, False),
    "1.5b down": (1536, 8960, False),
    "0.5b qkv": (1152, 896, True),
    "0.5b o": (896, 896, False),
    "0.5b gate_up": (9728, 896, False),
    "0.5b down": (896, 4864, False),
}


def check():
    torch.manual_seed(0)
    for (N, K, bias), M in itertools.product([(48, 64, True), (40, 200, False)], [3, 16]):
        for cfg in [
            (16, 32, 1, 4, 1, 0),
            (16, 32, 2, 4, 1, 1),
            (32, 64, 4, 4, 1, 0),
            (16, 64, 3, 4, 1, 1),
        ]:
            x, w = torch.randn(M, K), torch.randn(N, K)
            b = torch.randn(N) if bias else None
            ref = x.double() @ w.double().T + (b.double() if bias else 0)
            got = skinny(x, w, b, cfg).double()
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            assert err < 1e-2, (N, K, M, cfg, err)
            print("ok", N, K, M, cfg, f"{err:.1e}")


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


def search(rows, layers, shapes):
    dev = "cuda"
    x0 = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    y0 = torch.empty_like(x0)
    bw = (2 * x0.numel()) / (graph_time(lambda: y0.copy_(x0)) / 1e3)
    x0 = y0 = None  # free the copy buffers
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s, rows {rows}, {layers} distinct weights per shape")
    print("| shape | variant | us/call | vs bound | vs F.linear |")
    print("|---|---|---|---|---|")
    for name in shapes:
        N, K, bias = SHAPES[name]
        torch.manual_seed(0)
        ws = [torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(layers)]
        bs = [
            torch.randn(N, device=dev, dtype=torch.bfloat16) if bias else None
            for _ in range(layers)
        ]
        x = torch.randn(rows, K, device=dev, dtype=torch.bfloat16)
        out = torch.empty(rows, N, device=dev, dtype=torch.bfloat16)
        bound = N * K * 2 / bw * 1e6
        res = {}

        def lin():
            for w, b in zip(ws, bs):
                torch.nn.functional.linear(x, w, b)

        res["F.linear"] = graph_time(lin) * 1e3 / layers
        wts = [w.t().contiguous() for w in ws]

        def nn_mm():
            for wt, b in zip(wts, bs):
                (torch.addmm(b, x, wt) if b is not None else x @ wt)

        res["x @ W^T (NN)"] = graph_time(nn_mm) * 1e3 / layers
        wts = None

        def swap_mm():
            for w in ws:
                torch.mm(w, x.t())

        res["W @ x^T"] = graph_time(swap_mm) * 1e3 / layers
        ref = torch.nn.functional.linear(x, ws[0], bs[0]).float()
        parts = {
            sk: torch.empty((sk, rows, N), dtype=torch.float32, device=dev) for sk in (2, 4, 8)
        }
        phase1 = []
        for bn, bk, sk, swap in itertools.product(
            (16, 32, 64, 128), (64, 128, 256), (1, 2, 4, 8), (0, 1)
        ):
            progs = -(-N // bn) * sk
            if progs < 48 or progs > 2400 or (swap and bn < 64) or (bk * sk > K):
                continue
            cfg = (bn, bk, sk, 4, 4, swap)
            try:
                got = skinny(x, ws[0], bs[0], cfg, part=parts.get(sk)).float()
                err = ((got - ref).abs().max() / ref.abs().max()).item()
                if err > 2e-2:
                    print(f"  BAD {name} {cfg} err {err:.1e}")
                    continue
                t = graph_time(
                    lambda: [
                        skinny(x, w, b, cfg, out=out, part=parts.get(sk)) for w, b in zip(ws, bs)
                    ]
                )
                phase1.append((t * 1e3 / layers, cfg))
            except Exception as e:  # noqa: BLE001 - out of resources etc.
                print(f"  skip {cfg}: {type(e).__name__} {str(e)[:80]}")
        phase1.sort()
        phase2 = []
        for _, (bn, bk, sk, _, _, swap) in phase1[:4]:
            for warps, stages in itertools.product((2, 4, 8), (2, 3, 4, 6)):
                cfg = (bn, bk, sk, warps, stages, swap)
                try:
                    t = graph_time(
                        lambda: [
                            skinny(x, w, b, cfg, out=out, part=parts.get(sk))
                            for w, b in zip(ws, bs)
                        ]
                    )
                    tn = graph_time(
                        lambda: [
                            skinny(x, w, b, cfg, out=out, part=parts.get(sk), reduce=False)
                            for w, b in zip(ws, bs)
                        ]
                    )
                    phase2.append((t * 1e3 / layers, tn * 1e3 / layers, cfg))
                except Exception as e:  # noqa: BLE001
                    print(f"  skip {cfg}: {type(e).__name__} {str(e)[:80]}")
        phase2.sort()
        for k, v in res.items():
            print(f"| {name} | {k} | {v:.2f} | {v / bound:.2f} | {v / res['F.linear']:.2f} |")
        for t, tn, cfg in phase2[:3]:
            print(
                f"| {name} | triton {cfg} | {t:.2f} (no reduce {tn:.2f}) | {t / bound:.2f} | "
                f"{t / res['F.linear']:.2f} |"
            )
        print(
            f"| {name} | bound ({N * K * 2 / 1e6:.1f} MB) | {bound:.2f} | 1.00 | {bound / res['F.linear']:.2f} |"
        )
        sys.stdout.flush()
        ws = bs = None  # free this shape's weights
        torch.cuda.empty_cache()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    p.add_argument("--search", action="store_true")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--shapes", default=",".join(SHAPES))
    a = p.parse_args()
    if a.check:
        assert os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
        check()
    if a.search:
        search(a.rows, a.layers, a.shapes.split(","))
