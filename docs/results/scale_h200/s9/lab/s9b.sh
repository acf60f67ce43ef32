#!/bin/bash
# session 9, call B: fp8 decode attention: fp16 dots (no per-element F2F) and a token-minor V page
export PYTHONPATH=$PWD/src:$PWD/benchmarks:$PWD/docs/results/scale_h200/s8/lab
timeout 500 python docs/results/scale_h200/s9/lab/attn_layout.py > $OUT/attn_conv.txt 2>&1; echo "rc $?"
grep -v "^  skip" $OUT/attn_conv.txt | sort -t'|' -k2,2n -k3,3 -k12,12n | head -120
grep "skip" $OUT/attn_conv.txt | head -5
