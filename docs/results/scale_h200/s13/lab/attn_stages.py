"""Lab (session 13): the fp8 decode attention with its tiles copied by cp.async into a per-warp shared-memory ring
STAGES deep (attention_fp8.STAGES > 0) against the register double buffer (STAGES = 0, sessions 10-12): checked
against a float64 reference over the same e4m3 values, then timed (CUDA graphs over 4 caches, Qwen2.5 shapes).

    PYTHONPATH=src python docs/results/scale_h200/s13/lab/attn_stages.py --check --bench
"""

import argparse
import itertools
import statistics
import sys

import torch

from aha import _cuda
from aha.rollout.fast import attention, attention_fp8
from aha.rollout.fast.kv_cache import quantize


def make(lens, NH, KVH, D, page, seed, dtype=torch.bfloat16, vscale=1.0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    B = len(lens)
    W = -(-max(lens) // page) + 1
    bt = (torch.randperm(B * W, generator=g) + 1).view(B, W).to(torch.int32)
    slots = (B * W + 1) * page
    k = torch.randn(slots, KVH, D, generator=g) * 2 + torch.randn(1, KVH, D, generator=g) * 4
    v = torch.randn(slots, KVH, D, generator=g) * vscale
    q = torch.randn(B, NH, D, generator=g)
    k, ks = quantize(k)
    v, vs = quantize(v)
    out = [q.to(dtype), k, v, ks, vs, bt, torch.tensor(lens, dtype=torch.int32)]
    return [t.cuda() for t in out]


def reference(q, k, v, ks, vs, bt, lens, page):
    outs = []
    G = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        L = int(lens[b])
        p = torch.arange(L, device=q.device)
        slots = bt[b, p // page].long() * page + p % page
        K = k[slots].double() * ks[slots].double()[..., None]
        V = v[slots].double() * vs[slots].double()[..., None]
        K, V = K.repeat_interleave(G, 1), V.repeat_interleave(G, 1)
        s = torch.einsum("hd,lhd->hl", q[b].double(), K) * q.shape[-1] ** -0.5
        outs.append(torch.einsum("hl,lhd->hd", s.softmax(-1), V))
    return torch.stack(outs)


def run(args, page, splits, fused, warps, stages, tiles=1):
    q, k, v, ks, vs, bt, lens = args
    B, NH, D = q.shape
    out = torch.empty_like(q)
    mo = torch.empty((B, NH, max(splits, 1), D), dtype=torch.float32, device=q.device)
    ml = torch.empty((B, NH, max(splits, 1)), dtype=torch.float32, device=q.device)
    cnt = torch.zeros(B * k.shape[1], dtype=torch.int32, device=q.device) if fused else None
    ok = attention_fp8.decode_fp8(
        q, k, v, ks, vs, bt, lens, page, D**-0.5, out, mo, ml, splits, cnt, warps, stages, tiles
    )
    assert ok
    if splits > 1 and not fused:
        attention._merge(mo, ml, out, splits)
    return out


def check():
    worst = {}
    cases = itertools.product(
        [(12, 2, 128), (14, 2, 64), (16, 1, 128), (4, 4, 64), (28, 4, 128)],
        [[1, 17, 100, 16, 33], [300, 5, 64, 1000, 2049]],
        [16, 32],
        [1, 2, 8],
        [(8, 0, 1), (8, 2, 1), (8, 2, 2), (8, 3, 2), (4, 4, 2), (2, 3, 2)],
        [torch.bfloat16, torch.float16],
    )
    n = 0
    for (NH, KVH, D), lens, page, splits, (warps, stages, tiles), dt in cases:
        if dt == torch.float16 and (stages, tiles) not in ((0, 1), (2, 2)):
            continue
        fused = splits > 1 and n % 2 == 0
        args = make(lens, NH, KVH, D, page, n, dt, vscale=1e-3 if n % 3 == 0 else 1.0)
        n += 1
        ref = reference(*args, page)
        got = run(args, page, splits, fused, warps, stages, tiles).double()
        err = ((got - ref).norm() / ref.norm()).item()
        worst[(stages, tiles)] = max(worst.get((stages, tiles), 0.0), err)
        if err > 5e-3 or not torch.isfinite(got).all():
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
                stages,
                tiles,
                dt,
                f"{err:.2e}",
            )
    print(f"check: {n} cases; worst relative error by (stages, tiles) {worst}")


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
    print(f"{torch.cuda.get_device_name()}; {NC} caches, CUDA-graph median per call (us)")
    print(
        "| model | rows | tokens | warps | splits | stages | tiles | regs | us | vs the first | fp8 read TB/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (NH, KVH, D), L, B, variants in shapes:
        f8 = [make([L] * B, NH, KVH, D, page, i) for i in range(NC)]
        nbytes = B * KVH * L * (2 * D + 8)
        base = None
        for warps, splits, stages, tiles in variants:
            fn = lambda: [run(a, page, splits, splits > 1, warps, stages, tiles) for a in f8]  # noqa: E731
            try:
                us = gtime(fn) * 1e3 / NC
            except Exception as e:  # e.g. too much shared memory
                print(
                    f"| {name} | {B} | {L} | {warps} | {splits} | {stages} | {tiles} | - | {e!r} |"
                )
                continue
            G = NH // KVH
            kern = _cuda.compile(
                attention_fp8.SOURCE,
                "aha_decode_fp8",
                attention_fp8.defines(G, D, page, torch.bfloat16, warps, stages, tiles),
            )
            regs = f"{kern.registers}/{kern.local_bytes}"
            base = us if base is None else base
            print(
                f"| {name} | {B} | {L} | {warps} | {splits} | {stages} | {tiles} | {regs} | {us:.1f} | "
                f"{base / us:.2f}x | {nbytes / us / 1e6:.2f} |"
            )
        f8 = None
        torch.cuda.empty_cache()


# (warps, splits, stages, tiles); session 13's second call timed stages 2-5 of one tile (no faster than 0)
V = [
    (8, 1, 0, 1),
    (8, 1, 2, 1),
    (8, 1, 2, 2),
    (8, 1, 3, 2),
    (4, 1, 3, 2),
    (4, 2, 2, 2),
    (8, 2, 2, 2),
]
SMALL = [(8, s, st, ti) for s in (4, 8) for st, ti in ((0, 1), (2, 2), (3, 2))]

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--few", action="store_true", help="the 64-row shapes only")
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if a.few:  # the register path, the one-tile ring, the ring with two tiles from PAIR_FROM tiles a warp
        V = [(8, 1, 0, 1), (8, 1, 2, 1), (8, 1, 2, 2)]
    if a.bench:
        shapes = [("1.5b", (12, 2, 128), L, 64, V) for L in (544, 2176, 4352, 16384)]
        shapes += [("0.5b", (14, 2, 64), 512, 64, V), ("7b", (28, 4, 128), 2048, 64, V)]
        shapes += [] if a.few else [("1.5b", (12, 2, 128), 4352, 8, SMALL)]
        bench(shapes)
    if a.check:
        check()
