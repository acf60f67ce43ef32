"""Lab: decode step with the split merge fused into the attention kernel (counters) vs the merge kernel."""

import sys

import torch

import aha.rollout.fast.model_runner as mr
from decode_step import COLS, case
from rollout import copy_bandwidth

real = mr.decode_attention


def unfused(*a, counters=None, **k):
    return real(*a, **k)


bw = copy_bandwidth()
rows = []
for spec in sys.argv[1].split(","):
    arch, _, new = spec.partition(":")
    for name, fn in (
        ("merge kernel", unfused),
        ("fused merge", real),
        ("merge kernel", unfused),
        ("fused merge", real),
    ):
        mr.decode_attention = fn
        r = case(arch, int(new), 64, "cuda", bw, ["packed"])[0]
        r["path"] = name
        rows.append(r)
        torch.cuda.empty_cache()
print("| " + " | ".join(COLS) + " |\n|" + "---|" * len(COLS))
for r in rows:
    print(
        "| "
        + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in COLS)
        + " |"
    )
