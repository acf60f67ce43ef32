#!/bin/bash
# After removing the losing variants: the GPU tests again, and the whole decode step, bf16 vs fp8 KV.
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
timeout 200 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py tests/test_kv_fp8.py tests/test_fast_engine_triton.py tests/test_fast_engine.py > $OUT/gpu_tests_final.txt 2>&1; echo "tests rc $?"; tail -3 $OUT/gpu_tests_final.txt
timeout 250 python benchmarks/decode_step.py --cases 1.5b:2048,0.5b:384 --rows 64 --paths packed,fp8 > $OUT/decode_step.txt 2>&1; echo "decode rc $?"; tail -12 $OUT/decode_step.txt
