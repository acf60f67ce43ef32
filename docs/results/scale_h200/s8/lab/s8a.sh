#!/bin/bash
# session 8, call A: decode kernel breakdown + skinny GEMM search
export PYTHONPATH=$PWD/src:$PWD/benchmarks
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $OUT/gpu.txt
timeout 170 python docs/results/scale_h200/s8/lab/prof_decode.py 1.5b:2048 0.5b:384 > $OUT/prof_decode.txt 2>&1; echo "prof rc $?"
tail -5 $OUT/prof_decode.txt
timeout 380 python docs/results/scale_h200/s8/lab/skinny.py --search > $OUT/skinny.txt 2>&1; echo "skinny rc $?"
grep -v "^  skip" $OUT/skinny.txt | tail -60
