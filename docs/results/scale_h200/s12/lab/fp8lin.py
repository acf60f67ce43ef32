"""Lab (session 12): aha.rollout.fast.fp8_linear (x quantized by its producer per row, W per output channel) against bf16 cuBLAS and session 11's w8a8 kernel (x per row), at decode shapes, 28 weight copies
per CUDA graph; and the producers (RMSNorm, SiLU product) with and without the quantized output.
(Earlier versions timed x quantized inside the GEMM, fp8lin_inkernel_64.txt, and by its producer per row and
128 columns with a scale applied per K block, fp8lin_group128_64.txt.)

    python docs/results/scale_h200/s12/lab/fp8lin.py --rows 64          # from the repository root, PYTHONPATH=src
"""

import argparse
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../s11/lab"))
from fp8gemm import SHAPES, graph_time, quant_rows, w8  # noqa: E402

from aha.rollout.fast.fp8_linear import (  # noqa: E402
    E4M3, config, fp8_linear, fp8_linear_torch, quantize_rows, quantize_weight, rms_norm_fp8, silu_mul_fp8,
)
from aha.rollout.fast.layers import rms_norm, silu_mul  # noqa: E402

S11_BEST = {  # session 11's best w8a8 configs (BN, BK, SK, warps, stages), fp8gemm_64.txt
    "1.5b gate_up": (64, 128, 1, 4, 4),
    "1.5b down": (64, 256, 4, 4, 6),
    "1.5b qkv": (32, 256, 1, 4, 6),
    "1.5b o": (32, 256, 1, 4, 6),
    "1.5b lm_head": (64, 128, 1, 4, 4),
    "0.5b gate_up": (128, 128, 1, 4, 6),
    "0.5b down": (32, 256, 4, 4, 4),
}


def check(dev):
    torch.manual_seed(1)
    worst = 0.0
    for M, (N, K) in itertools.product([1, 7, 64, 100, 256], [(2048, 1536), (1536, 8960), (300, 200)]):
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=dev) * 0.02
        b = torch.randn(N, device=dev, dtype=torch.bfloat16)
        wq, ws = torch.empty(N, K, dtype=E4M3, device=dev), torch.empty(N, device=dev)
        quantize_weight(w, wq, ws)
        xq, xs = quantize_rows(x)
        ref = fp8_linear_torch(xq, xs, wq, ws, b, torch.float32).double()
        for cfg in [None, (32, 128, 1, 4, 4), (64, 256, 4, 4, 6)]:
            got = fp8_linear(xq, xs, wq, ws, b, torch.bfloat16, cfg).double()
            e = ((got - ref).norm() / ref.norm()).item()
            worst = max(worst, e)
            assert e < 1e-2, (M, N, K, cfg, e)
    print(f"check: GPU kernel vs torch reference (fp32), worst rel err {worst:.1e} (bf16 output rounding)")
    for T, H in [(1, 1536), (64, 1536), (64, 8960), (3, 300)]:
        x, r = (torch.randn(T, H, device=dev, dtype=torch.bfloat16) for _ in range(2))
        w = torch.rand(H, device=dev, dtype=torch.bfloat16) + 0.5
        (q, qs), ro = rms_norm_fp8(x, w, 1e-6, r)
        y, ro2 = rms_norm(x, w, 1e-6, r)
        q2, qs2 = quantize_rows(y)
        bad = (q.float() != q2.float()).float().mean().item()
        assert torch.equal(ro, ro2) and bad < 1e-3 and torch.allclose(qs, qs2, rtol=1e-6), (T, H, bad)
        q, qs = silu_mul_fp8(x, r)
        q2, qs2 = quantize_rows(silu_mul(x, r))
        bad2 = (q.float() != q2.float()).float().mean().item()
        assert bad2 < 1e-3 and torch.allclose(qs, qs2, rtol=1e-6), (T, H, bad2)
        print(f"check: producers {T}x{H}: e4m3 codes differing from torch's conversion rms {bad:.1e}, silu {bad2:.1e}")


def bench(rows, layers, shapes):
    dev = "cuda"
    print(f"rows {rows}, {layers} distinct weights per shape (4 for the lm head), torch {torch.__version__}")
    print("| shape | variant | us/call | vs F.linear | rel err vs fp32 |")
    print("|---|---|---|---|---|")
    for name in shapes:
        N, K, bias = SHAPES[name]
        L = 4 if "lm_head" in name else layers
        torch.manual_seed(0)
        ws16 = [torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(L)]
        bs = [torch.randn(N, device=dev, dtype=torch.bfloat16) * 0.1 if bias else None for _ in range(L)]
        x = torch.randn(rows, K, device=dev, dtype=torch.bfloat16)
        ref = torch.nn.functional.linear(x.float(), ws16[0].float(), bs[0].float() if bias else None)
        res = {}

        def err(y):
            return ((y.float() - ref).norm() / ref.norm()).item()

        res["F.linear bf16"] = (graph_time(lambda: [torch.nn.functional.linear(x, w, b) for w, b in zip(ws16, bs)]) * 1e3 / L, err(torch.nn.functional.linear(x, ws16[0], bs[0])))
        q = []
        for w in ws16:
            a, s = torch.empty(N, K, dtype=E4M3, device=dev), torch.empty(N, device=dev)
            quantize_weight(w, a, s)
            q.append((a, s))
        ws16 = None
        torch.cuda.empty_cache()
        if name in S11_BEST:
            xq, xs = quant_rows(x)
            cfg = S11_BEST[name]
            out = torch.empty(rows, N, device=dev, dtype=torch.bfloat16)
            part = torch.empty((cfg[2], rows, N), dtype=torch.float32, device=dev) if cfg[2] > 1 else None
            y = w8(xq, xs, q[0][0], q[0][1], bs[0], cfg, out, part, True)
            res[f"s11 w8a8, x pre-quantized per row {cfg}"] = (graph_time(lambda: [w8(xq, xs, a, s, b, cfg, out, part, True) for (a, s), b in zip(q, bs)]) * 1e3 / L, err(y))
        xq, xs = quantize_rows(x)
        dflt = config(rows, N, K)
        res[f"fp8_linear default {dflt}"] = (graph_time(lambda: [fp8_linear(xq, xs, a, s, b) for (a, s), b in zip(q, bs)]) * 1e3 / L, err(fp8_linear(xq, xs, q[0][0], q[0][1], bs[0])))
        sweep = []
        for bn, bk, sk in itertools.product((32, 64, 128), (128, 256), (1, 2, 4, 8)):
            progs = -(-N // bn) * sk
            if progs < 40 or progs > 5000 or bk * sk * 2 > K:
                continue
            cfg = (bn, bk, sk, 4, 4 if sk == 1 else 6)
            try:
                t = graph_time(lambda: [fp8_linear(xq, xs, a, s, b, torch.bfloat16, cfg) for (a, s), b in zip(q, bs)]) * 1e3 / L
                sweep.append((t, cfg))
            except Exception as ex:  # noqa: BLE001
                print(f"  skip {cfg}: {type(ex).__name__} {str(ex)[:80]}")
        sweep.sort()
        fine = []
        for _, (bn, bk, sk, _, _) in sweep[:2]:
            for warps, stages in itertools.product((4, 8), (3, 4, 6)):
                cfg = (bn, bk, sk, warps, stages)
                try:
                    t = graph_time(lambda: [fp8_linear(xq, xs, a, s, b, torch.bfloat16, cfg) for (a, s), b in zip(q, bs)]) * 1e3 / L
                    fine.append((t, cfg))
                except Exception as ex:  # noqa: BLE001
                    print(f"  skip {cfg}: {type(ex).__name__} {str(ex)[:80]}")
        fine.sort()
        for t, cfg in (fine or sweep)[:2]:
            res[f"fp8_linear best {cfg}"] = (t, err(fp8_linear(xq, xs, q[0][0], q[0][1], bs[0], torch.bfloat16, cfg)))
        base = res["F.linear bf16"][0]
        for k, (t, e) in res.items():
            print(f"| {name} | {k} | {t:.2f} | {t / base:.2f} | {e:.1e} |")
        sys.stdout.flush()
        q = None
        torch.cuda.empty_cache()


def producers(rows, layers):
    dev = "cuda"
    print("| producer | bf16 output us | fp8 output us |")
    print("|---|---|---|")
    for H in (1536, 896):
        xs_ = [torch.randn(rows, H, device=dev, dtype=torch.bfloat16) for _ in range(layers)]
        w = torch.rand(H, device=dev, dtype=torch.bfloat16) + 0.5
        a = graph_time(lambda: [rms_norm(x, w, 1e-6, x) for x in xs_]) * 1e3 / layers
        b = graph_time(lambda: [rms_norm_fp8(x, w, 1e-6, x) for x in xs_]) * 1e3 / layers
        print(f"| rms_norm + residual, {rows} x {H} | {a:.2f} | {b:.2f} |")
    for I in (8960, 4864):
        gu = [torch.randn(rows, 2 * I, device=dev, dtype=torch.bfloat16) for _ in range(layers)]
        a = graph_time(lambda: [silu_mul(t[:, :I], t[:, I:]) for t in gu]) * 1e3 / layers
        b = graph_time(lambda: [silu_mul_fp8(t[:, :I], t[:, I:]) for t in gu]) * 1e3 / layers
        print(f"| silu_mul, {rows} x {I} | {a:.2f} | {b:.2f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--shapes", default="1.5b gate_up,1.5b down,1.5b qkv,1.5b o,1.5b lm_head,0.5b gate_up,0.5b down")
    a = p.parse_args()
    check("cuda")
    for r in a.rows if isinstance(a.rows, list) else [a.rows]:
        producers(r, a.layers)
        bench(r, a.layers, a.shapes.split(","))
