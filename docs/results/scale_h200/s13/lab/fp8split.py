"""Lab (session 13): fp8_linear's configs at 64 rows with split-K counts that are not powers of 2 (session 12's sweep
took 1, 2, 4, 8): Qwen2.5-1.5B's down (8960 -> 1536: 24 tiles of 64 columns x 4 splits = 96 programs on 132
multiprocessors), gate/up (1536 -> 17920) and q/k/v (1536 -> 2048). CUDA-graph medians over 28 weight copies.

    PYTHONPATH=src python docs/results/scale_h200/s13/lab/fp8split.py
"""

import itertools
import statistics
import sys

import torch

from aha.rollout.fast.fp8_linear import config, fp8_linear, quantize_rows, quantize_weight
from aha.rollout.fast.kv_cache import FP8

L = 28


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
    return statistics.median(ts) * 1e3 / L


SHAPES = {  # name: (N, K, candidate (BLOCK_N, BLOCK_K, SPLIT_K, warps, stages))
    "down": (
        1536,
        8960,
        [
            (bn, bk, sk, 4, st)
            for bn, bk, sk, st in itertools.product((32, 64), (128, 256), (3, 4, 5, 6, 7), (4, 6))
        ],
    ),
    "gate/up": (
        17920,
        1536,
        [(bn, bk, sk, 4, 4) for bn, bk, sk in itertools.product((64, 128), (128, 256), (1, 2, 3))],
    ),
    "qkv": (
        2048,
        1536,
        [
            (bn, bk, sk, 4, st)
            for bn, bk, sk, st in itertools.product((16, 32), (128, 256), (1, 2, 3), (4, 6))
        ],
    ),
}

if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    dev, M = "cuda", 64
    g = torch.Generator(device=dev).manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, {M} rows, us a GEMM (median of 20 graph replays / {L})")
    print("| shape | config | us | vs shipped | rel err vs fp32 |\n|---|---|---|---|---|")
    for name, (N, K, cands) in SHAPES.items():
        x = torch.randn(M, K, device=dev, generator=g, dtype=torch.bfloat16)
        xq, xs = quantize_rows(x)
        ws = []
        for _ in range(L):
            w = torch.randn(N, K, device=dev, generator=g, dtype=torch.bfloat16) * 0.02
            q, s = (
                torch.empty(N, K, dtype=FP8, device=dev),
                torch.empty(N, dtype=torch.float32, device=dev),
            )
            quantize_weight(w, q, s)
            ws.append((q, s))
        ref = (xq.float() * xs[:, None]) @ (ws[0][0].float() * ws[0][1][:, None]).T
        shipped = config(M, N, K)
        rows = []
        for cfg in [shipped] + [c for c in cands if c != shipped]:
            try:
                t = graph_time(
                    lambda: [fp8_linear(xq, xs, q, s, None, torch.bfloat16, cfg) for q, s in ws]
                )  # noqa: B023
                y = fp8_linear(xq, xs, ws[0][0], ws[0][1], None, torch.bfloat16, cfg).float()
                rows.append((t, cfg, float((y - ref).norm() / ref.norm())))
            except Exception as e:  # noqa: BLE001
                print(f"  skip {cfg}: {type(e).__name__} {str(e)[:80]}")
        base = rows[0][0]
        for t, cfg, e in [rows[0]] + sorted(rows[1:])[:6]:
            tag = " (shipped)" if cfg == shipped else ""
            print(f"| {name} | {cfg}{tag} | {t:.2f} | {t / base:.3f} | {e:.1e} |")
        ws = None
        torch.cuda.empty_cache()
