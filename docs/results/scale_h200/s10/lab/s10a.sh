#!/bin/bash
# GPU tests of the fp8 path, then the 1.5B x 4,096 GRPO step with the fp8 KV cache (the plan's layout).
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py tests/test_kv_fp8.py tests/test_fast_engine_triton.py > $OUT/gpu_tests.txt 2>&1; echo "tests rc $?"; tail -3 $OUT/gpu_tests.txt
timeout 400 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w --set model.compile=true kv_cache_dtype=fp8 > $OUT/scale_15b_fp8.txt 2>&1; echo "fp8 rc $?"; grep "chosen" $OUT/scale_15b_fp8.txt; grep -A3 "^| model" $OUT/scale_15b_fp8.txt; grep "time split" $OUT/scale_15b_fp8.txt | head -1
