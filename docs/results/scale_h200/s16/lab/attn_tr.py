"""Lab (session 16): the fp8 decode attention in the transposed MMA layout (attention_fp8.TRANSPOSED: keys and head
dims on M, the <= 8 query heads of a KV head on N) against the 16-row layout: checked against s13's float64
reference (also with V scales spread 50x across tokens), then timed (CUDA graphs over 4 caches) from 16 tokens
(the fixed cost of a launch) to 16,384, with the registers each variant takes; with and without the early loads
(attention_fp8.EARLY_LOADS: the first tiles requested before griddepcontrol.wait).

    PYTHONPATH=src python docs/results/scale_h200/s16/lab/attn_tr.py
"""

import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "s13" / "lab"))
sys.path.insert(0, str(Path(__file__).parents[2] / "s15" / "lab"))
import attn_stages as s13  # noqa: E402
from attn_lazy import spread  # noqa: E402

from aha import _cuda  # noqa: E402
from aha.rollout.fast import attention_fp8  # noqa: E402


def check():
    worst, n, bad = {}, 0, 0
    for (NH, KVH, D), lens, splits, (warps, stages, tiles), dt, wide in itertools.product(
        [(12, 2, 128), (14, 2, 64), (28, 4, 128), (16, 2, 128), (4, 4, 64)],
        [[1, 17, 100, 16, 33], [300, 5, 64, 1000, 2049]],
        [1, 4],
        [(8, 0, 1), (8, 2, 2), (4, 0, 1), (16, 2, 1), (16, 0, 1)],
        [torch.bfloat16, torch.float16],
        [False, True],
    ):
        args = s13.make(lens, NH, KVH, D, 16, n, dt, vscale=1e-3 if n % 3 == 0 else 1.0)
        if wide:
            args = spread(args, n)
        n += 1
        ref = s13.reference(*args, 16)
        for tr in (False, True):
            if warps == 16 and not tr:
                continue  # the 16-row layout's warp merge takes 64 KiB of static shared memory at 16 warps
            attention_fp8.TRANSPOSED = tr
            got = s13.run(args, 16, splits, splits > 1, warps, stages, tiles).double()
            err = ((got - ref).norm() / ref.norm()).item()
            worst[(tr, wide)] = max(worst.get((tr, wide), 0.0), err)
            if err > 5e-3 or not torch.isfinite(got).all():
                bad += 1
                print(
                    "FAIL",
                    tr,
                    NH,
                    KVH,
                    D,
                    lens,
                    splits,
                    warps,
                    stages,
                    tiles,
                    dt,
                    wide,
                    f"{err:.2e}",
                )
    attention_fp8.TRANSPOSED = True
    print(
        f"check: {n} cases; worst relative error by (transposed, V scales spread) {worst}; failures {bad}"
    )
    return bad == 0


def bench():
    NC, page = 4, 16
    print(f"{torch.cuda.get_device_name()}; {NC} caches, CUDA-graph median per call (us)")
    print(
        "| model | rows | tokens | layout | early | warps | stages | tiles | regs | us | vs the first | fp8 read TB/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    main = [
        (False, 0, 8, 2, 2),
        (False, 1, 8, 2, 2),
        (True, 0, 8, 2, 2),
        (True, 1, 8, 2, 2),
        (True, 1, 8, 2, 1),
    ]
    main += [(True, 1, 8, 0, 1), (True, 1, 16, 2, 1), (True, 1, 16, 0, 1)]
    shapes = [("1.5b", (12, 2, 128), L, 64, main) for L in (16, 544, 2176, 4352, 16384)]
    shapes += [("0.5b", (14, 2, 64), L, 64, main) for L in (512, 2176)]
    shapes += [("3b", (16, 2, 128), 2176, 64, main)]
    shapes += [
        (
            "7b",
            (28, 4, 128),
            2048,
            64,
            [(False, 0, 4, 0, 1), (True, 1, 4, 0, 1), (True, 1, 8, 0, 1)],
        )
    ]
    for name, (NH, KVH, D), L, B, variants in shapes:
        caches = [s13.make([L] * B, NH, KVH, D, page, i) for i in range(NC)]
        nbytes = B * KVH * L * (2 * D + 8)
        base = None
        for tr, early, warps, stages, tiles in variants:
            attention_fp8.TRANSPOSED, attention_fp8.EARLY_LOADS = tr, bool(early)
            lay = f"{'T' if tr else '16-row'} | {early}"
            fn = lambda: [s13.run(a, page, 1, False, warps, stages, tiles) for a in caches]  # noqa: E731
            try:
                us = s13.gtime(fn) * 1e3 / NC
            except Exception as e:
                print(f"| {name} | {B} | {L} | {lay} | {warps} | {stages} | {tiles} | - | {e!r} |")
                continue
            kern = _cuda.compile(
                attention_fp8.SOURCE,
                "aha_decode_fp8",
                attention_fp8.defines(
                    NH // KVH, D, page, torch.bfloat16, warps, stages, tiles, True, tr, early
                ),
            )
            base = us if base is None else base
            print(
                f"| {name} | {B} | {L} | {lay} | {warps} | {stages} | {tiles} | "
                f"{kern.registers}/{kern.local_bytes} | {us:.1f} | {base / us:.3f}x | {nbytes / us / 1e6:.2f} |"
            )
        caches = None
        torch.cuda.empty_cache()
    attention_fp8.TRANSPOSED, attention_fp8.EARLY_LOADS = True, True


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    ok = check()
    bench()
    sys.exit(0 if ok else 1)
