#!/bin/bash
export PYTHONPATH=$PWD/src:$PWD/benchmarks
timeout 200 python -m pytest -q -p no:cacheprovider tests/test_fast_engine_triton.py tests/test_kv_fp8.py tests/test_fast_engine.py tests/test_engine_release.py > $OUT/gpu_tests.txt 2>&1; echo "tests rc $?"; tail -3 $OUT/gpu_tests.txt
timeout 200 python docs/results/scale_h200/s8/lab/ab_merge.py 1.5b:2048,0.5b:384 > $OUT/ab_merge.txt 2>&1; echo "ab rc $?"; grep "^|" $OUT/ab_merge.txt
timeout 180 python benchmarks/scale.py --models 0.5b --new 512 --max-memory-gib 13 --steps 6 --set model.compile=true > $OUT/scale_05b.txt 2>&1; echo "scale rc $?"; grep -A3 "^| model" $OUT/scale_05b.txt; grep "time split" $OUT/scale_05b.txt
