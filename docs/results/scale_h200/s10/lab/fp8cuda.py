"""Lab (session 10): the CUDA fp8 decode attention (aha/rollout/fast/attention_fp8.py) against the float64 reference
and the Triton kernels, then timed (CUDA graphs over 4 caches, 64 rows, Qwen2.5 shapes).

    PYTHONPATH=src python docs/results/scale_h200/s10/lab/fp8cuda.py --check --bench
"""

import argparse
import itertools
import os
import statistics
import sys

import torch

from aha.rollout.fast import attention, attention_fp8
from aha.rollout.fast.kv_cache import quantize


def make(lens, NH, KVH, D, page, seed, quant, dtype=torch.bfloat16, vscale=1.0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    B = len(lens)
    W = -(-max(lens) // page) + 1
    bt = (torch.randperm(B * W, generator=g) + 1).view(B, W).to(torch.int32)
    slots = (B * W + 1) * page
    k = torch.randn(slots, KVH, D, generator=g) * 2 + torch.randn(1, KVH, D, generator=g) * 4
    v = torch.randn(slots, KVH, D, generator=g) * vscale
    q = torch.randn(B, NH, D, generator=g)
    ks = vs = None
    if quant:
        k, ks = quantize(k)
        v, vs = quantize(v)
    else:
        k, v = k.to(dtype), v.to(dtype)
    out = [q.to(dtype), k, v, ks, vs, bt, torch.tensor(lens, dtype=torch.int32)]
    return [t.cuda() if t is not None else None for t in out]


def reference(q, k, v, ks, vs, bt, lens, page):
    outs = []
    G = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        L = int(lens[b])
        p = torch.arange(L, device=q.device)
        slots = bt[b, p // page].long() * page + p % page
        K, V = k[slots].double(), v[slots].double()
        if ks is not None:
            K, V = K * ks[slots].double()[..., None], V * vs[slots].double()[..., None]
        K, V = K.repeat_interleave(G, 1), V.repeat_interleave(G, 1)  # (L, NH, D)
        s = torch.einsum("hd,lhd->hl", q[b].double(), K) * q.shape[-1] ** -0.5
        outs.append(torch.einsum("hl,lhd->hd", s.softmax(-1), V))
    return torch.stack(outs)


def cuda_run(args, page, splits, fused, warps=4, prefetch=True, l2=0):
    q, k, v, ks, vs, bt, lens = args
    B, NH, D = q.shape
    out = torch.empty_like(q)
    mo = torch.empty((B, NH, max(splits, 1), D), dtype=torch.float32, device=q.device)
    ml = torch.empty((B, NH, max(splits, 1)), dtype=torch.float32, device=q.device)
    cnt = torch.zeros(B * k.shape[1], dtype=torch.int32, device=q.device) if fused else None
    ok = attention_fp8.decode_fp8(
        q, k, v, ks, vs, bt, lens, page, D**-0.5, out, mo, ml, splits, cnt, warps, prefetch
    )
    assert ok
    if splits > 1 and not fused:
        attention._merge(mo, ml, out, splits)
    if cnt is not None and not torch.cuda.is_current_stream_capturing():
        assert int(cnt.abs().sum()) == 0, "counters not reset"
    return out


def triton_run(args, page, splits, fused):
    q, k, v, ks, vs, bt, lens = args
    cnt = (
        torch.zeros(q.shape[0] * k.shape[1], dtype=torch.int32, device=q.device) if fused else None
    )
    os.environ["AHA_CUDA_KERNELS"] = "0"
    try:
        return attention.decode_attention(
            q,
            k,
            v,
            bt,
            lens,
            page,
            q.shape[-1] ** -0.5,
            splits,
            k_scale=ks,
            v_scale=vs,
            counters=cnt,
        )
    finally:
        os.environ["AHA_CUDA_KERNELS"] = "1"


def check(quick=False):
    worst = 0.0
    variants = (
        [(8, True, 2), (4, True, 0), (4, False, 1)]
        if quick
        else [(4, True, 0), (8, False, 0), (2, True, 2), (1, True, 1), (8, True, 3)]
    )
    cases = itertools.product(
        [(12, 2, 128), (14, 2, 64), (16, 1, 128), (4, 4, 64), (28, 4, 128), (8, 8, 128)],
        [[1, 17, 100, 16, 33], [300, 5, 64, 1000]],
        [16, 32],
        [1, 2, 4, 16],
        [False, True],
        variants,
        [torch.bfloat16, torch.float16],
    )
    n = 0
    for (NH, KVH, D), lens, page, splits, fused, (warps, pf, l2), dt in cases:
        if splits == 1 and fused:
            continue
        if dt == torch.float16 and (warps, pf, l2) != variants[0]:
            continue
        args = make(lens, NH, KVH, D, page, n, True, dt, vscale=1e-3 if n % 3 == 0 else 1.0)
        n += 1
        ref = reference(*args, page)
        got = cuda_run(args, page, splits, fused, warps, pf, l2).double()
        err = ((got - ref).norm() / ref.norm()).item()
        worst = max(worst, err)
        if err > 5e-3 or not torch.isfinite(got).all():
            tri = triton_run(args, page, splits, fused).double()
            terr = ((tri - ref).norm() / ref.norm()).item()
            print(
                "FAIL",
                NH,
                KVH,
                D,
                lens,
                page,
                splits,
                fused,
                warps,
                pf,
                l2,
                dt,
                f"cuda {err:.2e} triton {terr:.2e}",
            )
    print(f"check: {n} cases, worst relative error (vs float64 over the fp8 values) {worst:.2e}")


def gtime(fn, reps=20):
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


def bench(shapes):
    NC, page = 4, 16
    print(
        f"{torch.cuda.get_device_name()}; {NC} caches, CUDA-graph median per call (us), merge included"
    )
    print("| model | rows | tokens | variant | us | vs triton bf16 | fp8 read TB/s |")
    print("|---|---|---|---|---|---|---|")
    for name, (NH, KVH, D), L, B, variants in shapes:
        lens = [L] * B
        bf = [make(lens, NH, KVH, D, page, i, False) for i in range(NC)]
        f8 = [make(lens, NH, KVH, D, page, i, True) for i in range(NC)]
        nbytes = B * KVH * L * (2 * D + 8)
        res = {}
        sp = attention.decode_splits(B, KVH)
        for label, fn in [
            (f"triton bf16 s{sp} fused", lambda: [triton_run(a, page, sp, True) for a in bf]),
            (f"triton fp8 s{sp} fused", lambda: [triton_run(a, page, sp, True) for a in f8]),
        ]:
            res[label] = gtime(fn) * 1e3 / NC
        for warps, splits, l2 in variants:
            label = f"cuda fp8 w{warps} s{splits} l2 {l2}"
            fn = lambda: [cuda_run(a, page, splits, splits > 1, warps, True, l2) for a in f8]  # noqa: E731
            res[label] = gtime(fn) * 1e3 / NC
        base = res[f"triton bf16 s{sp} fused"]
        for label, us in res.items():
            print(
                f"| {name} | {B} | {L} | {label} | {us:.1f} | {base / us:.2f}x | {nbytes / us / 1e6:.2f} |"
            )
        bf = f8 = None
        torch.cuda.empty_cache()


V64 = [(8, 1, 0), (8, 1, 1), (8, 1, 2), (8, 1, 3), (4, 2, 0), (4, 2, 2), (4, 1, 2), (8, 2, 2)]
SMALL = [(8, s, l2) for s in (2, 4, 8, 16) for l2 in (0, 2)] + [(4, s, 2) for s in (4, 8, 16)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if a.check:
        check(a.quick)
    if a.bench:
        shapes = [("1.5b", (12, 2, 128), L, 64, V64) for L in (544, 2176, 4352)]
        shapes += [("0.5b", (14, 2, 64), 512, 64, V64), ("7b", (28, 4, 128), 2048, 64, V64)]
        shapes += [("1.5b", (12, 2, 128), 4352, 8, SMALL)]
        if a.long:
            shapes.append(("1.5b", (12, 2, 128), 16384, 64, V64))
        bench(shapes)
