#!/bin/bash
# session 9, call A: the KV cache layout and the fp8 decode attention
export PYTHONPATH=$PWD/src:$PWD/benchmarks:$PWD/docs/results/scale_h200/s8/lab
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv | tee $OUT/gpu.txt
timeout 560 python docs/results/scale_h200/s9/lab/attn_layout.py --layouts > $OUT/attn_layout.txt 2>&1; echo "rc $?"
grep -v "^  skip" $OUT/attn_layout.txt | sort -t'|' -k2,2n -k3,3 -k4,4 -k11,11n | head -150
