#!/bin/bash
# The same case with the bf16 KV cache (the ratio in one session), and fp8 with the KV cache released in the update.
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
timeout 500 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w --set model.compile=true > $OUT/scale_15b_bf16.txt 2>&1; echo "bf16 rc $?"; grep "chosen" $OUT/scale_15b_bf16.txt; grep -A3 "^| model" $OUT/scale_15b_bf16.txt; grep "time split" $OUT/scale_15b_bf16.txt | head -1
timeout 300 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w --set model.compile=true kv_cache_dtype=fp8 engine_release=true > $OUT/scale_15b_fp8_release.txt 2>&1; echo "fp8 release rc $?"; grep "chosen" $OUT/scale_15b_fp8_release.txt; grep -A3 "^| model" $OUT/scale_15b_fp8_release.txt; grep "time split" $OUT/scale_15b_fp8_release.txt | head -1
