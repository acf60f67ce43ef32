"""Lab (session 16): the negative control of tests/test_attention_fp8.py's early-loads test: with the kernel's
guard removed (the first tiles always requested before griddepcontrol.wait, also the one that holds position
L - 1), the test must fail; with the shipped source it must pass.

    PYTHONPATH=src:tests python docs/results/scale_h200/s16/lab/early_negative.py
"""

import test_attention_fp8 as t
from aha.rollout.fast import attention_fp8

shipped = attention_fp8.SOURCE
broken = shipped.replace("EARLY && (end < L ||", "EARLY && (true ||")
assert broken.count("EARLY && (true ||") == 2
for name, src in (("shipped", shipped), ("guard removed", broken)):
    attention_fp8.SOURCE = src
    for warps, stages, tiles in ((8, 2, 2), (8, 0, 1)):
        for tr in (False, True):
            try:
                t.test_early_loads_never_read_what_the_previous_kernel_writes(
                    warps, stages, tiles, tr, 1
                )
                print(
                    f"{name}: warps {warps} stages {stages} tiles {tiles} transposed {tr}: passed"
                )
            except AssertionError as e:
                print(
                    f"{name}: warps {warps} stages {stages} tiles {tiles} transposed {tr}: FAILED {str(e)[:200]}"
                )
attention_fp8.SOURCE = shipped
