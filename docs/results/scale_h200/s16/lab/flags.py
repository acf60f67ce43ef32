"""Lab (session 16): run a script with attention_fp8's switches set, for A/B timings in one process each.

    PYTHONPATH=src:benchmarks python docs/results/scale_h200/s16/lab/flags.py TRANSPOSED=0 EARLY_LOADS=0 -- \
        benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv
"""

import runpy
import sys

from aha.rollout.fast import attention_fp8

i = sys.argv.index("--")
for kv in sys.argv[1:i]:
    k, v = kv.split("=")
    assert hasattr(attention_fp8, k), k
    setattr(attention_fp8, k, bool(int(v)))
    print(f"attention_fp8.{k} = {getattr(attention_fp8, k)}")
sys.argv = sys.argv[i + 1 :]
runpy.run_path(sys.argv[0], run_name="__main__")
