"""Lab (session 15): the fp8 decode attention with lazy rescaling (attention_fp8.LAZY_RESCALE: O in units of the
largest v_scale so far, rescaled only when it or a row's max moves) against every-tile rescaling: checked against
s13's float64 reference (also with V scales spread 50x across tokens), then timed (CUDA graphs over 4 caches).

    PYTHONPATH=src python docs/results/scale_h200/s15/lab/attn_lazy.py

Ran once against the kernel with that switch (s15/attn_lazy.txt); lazy rescaling was slower and the switch was
removed, so this script no longer runs as is (s15/README.md describes the change).
"""

import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "s13" / "lab"))
import attn_stages as s13  # noqa: E402

from aha.rollout.fast import attention_fp8  # noqa: E402
from aha.rollout.fast.kv_cache import quantize  # noqa: E402


def spread(args, seed):
    """The same cache with each token's V multiplied by exp(2 N(0,1)) before quantizing (scales ~50x apart)."""
    q, k, v, ks, vs, bt, lens = args
    g = torch.Generator(device="cpu").manual_seed(seed)
    vf = (v.float() * vs[..., None]).cpu() * torch.exp(2 * torch.randn(v.shape[0], 1, 1, generator=g))
    v2, vs2 = quantize(vf)
    return [q, k, v2.cuda(), ks, vs2.cuda(), bt, lens]


def check():
    worst = {}
    n = 0
    for (NH, KVH, D), lens, splits, (warps, stages, tiles), dt, wide in itertools.product(
        [(12, 2, 128), (14, 2, 64), (28, 4, 128)],
        [[1, 17, 100, 16, 33], [300, 5, 64, 1000, 2049]],
        [1, 4],
        [(8, 0, 1), (8, 2, 2), (4, 0, 1)],
        [torch.bfloat16, torch.float16],
        [False, True],
    ):
        args = s13.make(lens, NH, KVH, D, 16, n, dt, vscale=1e-3 if n % 3 == 0 else 1.0)
        if wide:
            args = spread(args, n)
        n += 1
        ref = s13.reference(*args, 16)
        for lazy in (False, True):
            attention_fp8.LAZY_RESCALE = lazy
            got = s13.run(args, 16, splits, splits > 1, warps, stages, tiles).double()
            err = ((got - ref).norm() / ref.norm()).item()
            worst[(lazy, wide)] = max(worst.get((lazy, wide), 0.0), err)
            if err > 5e-3 or not torch.isfinite(got).all():
                print("FAIL", lazy, NH, KVH, D, lens, splits, warps, stages, tiles, dt, wide, f"{err:.2e}")
    print(f"check: {n} cases x lazy on/off; worst relative error by (lazy, V scales spread) {worst}")


def bench():
    NC, page = 4, 16
    print(f"{torch.cuda.get_device_name()}; {NC} caches, CUDA-graph median per call (us)")
    print("| model | rows | tokens | warps | stages | tiles | lazy | us | vs every-tile |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (NH, KVH, D), L, B, (warps, stages, tiles) in [
        ("1.5b", (12, 2, 128), 544, 64, (8, 2, 2)),
        ("1.5b", (12, 2, 128), 2176, 64, (8, 2, 2)),
        ("1.5b", (12, 2, 128), 4608, 64, (8, 2, 2)),
        ("1.5b", (12, 2, 128), 16384, 64, (8, 2, 2)),
        ("0.5b", (14, 2, 64), 512, 64, (8, 2, 2)),
        ("7b", (28, 4, 128), 2048, 64, (4, 0, 1)),
    ]:
        caches = [s13.make([L] * B, NH, KVH, D, page, i) for i in range(NC)]
        base = None
        for lazy in (False, True):
            attention_fp8.LAZY_RESCALE = lazy
            fn = lambda: [s13.run(a, page, 1, False, warps, stages, tiles) for a in caches]  # noqa: E731
            us = s13.gtime(fn) * 1e3 / NC
            base = us if base is None else base
            print(f"| {name} | {B} | {L} | {warps} | {stages} | {tiles} | {lazy} | {us:.1f} | {base / us:.3f}x |")
        caches = None
        torch.cuda.empty_cache()
    attention_fp8.LAZY_RESCALE = True


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    bench()
    check()
