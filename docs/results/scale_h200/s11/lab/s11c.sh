#!/bin/bash
# 1.5B x 4,096 with the fp8 KV cache: engine_release=true first, then the plan's own layout (session 10 ran them
# in the other order), to see whether the 0.68 s between them repeats. Both with algorithm.rollout_is=token_truncate.
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
for v in "engine_release=true" ""; do
  name=$( [ -n "$v" ] && echo release || echo plan )
  timeout 270 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w --set model.compile=true kv_cache_dtype=fp8 algorithm.rollout_is=token_truncate $v > $OUT/scale_15b_fp8_$name.txt 2>&1; echo "$name rc $?"
  grep "chosen" $OUT/scale_15b_fp8_$name.txt; grep -A3 "^| model" $OUT/scale_15b_fp8_$name.txt; grep "time split" $OUT/scale_15b_fp8_$name.txt | head -1
done
