"""o_proj at 64 rows (1.5B: 1536 x 1536, bf16) through linear_partials' configs against cuBLAS (F.linear): each
alone in a CUDA graph of 200 launches (no PDL overlap here; that shows in decode_step's replay), median of 5."""
import statistics

import torch
import torch.nn.functional as F

from aha.rollout.fast import fp8_linear as f8


def graph_us(fn, n=200):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    out = []
    for _ in range(5):
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b) * 1e3 / n)
    return statistics.median(out)


x = torch.randn(64, 1536, device="cuda", dtype=torch.bfloat16)
w = torch.randn(1536, 1536, device="cuda", dtype=torch.bfloat16) * 0.02
ref = F.linear(x, w).float()
print(f"cuBLAS F.linear: {graph_us(lambda: F.linear(x, w)):.2f} us")
rows = []
for bn in (16, 32, 64):
    for bk in (64, 128, 256):
        for split in (1, 2, 3, 4, 6):
            for warps, stages in ((4, 3), (4, 4), (2, 4)):
                cfg = (bn, bk, split, warps, stages)
                try:
                    got = f8.linear_partials(x, w, cfg=cfg)
                    got = f8.sum_partials(got, torch.float32) if got.dim() == 3 else got.float()
                    err = ((got - ref).norm() / ref.norm()).item()
                    us = graph_us(lambda: f8.linear_partials(x, w, cfg=cfg))
                except Exception as e:  # a config the compiler refuses (shared memory)
                    print(cfg, "failed:", str(e).splitlines()[0][:100])
                    continue
                rows.append((us, cfg, err))
rows.sort()
for us, cfg, err in rows[:12]:
    print(f"{cfg}: {us:.2f} us (rel err {err:.1e})")
print("config_plain now:", f8.config_plain(64, 1536, 1536))
