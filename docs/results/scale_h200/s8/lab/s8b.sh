#!/bin/bash
export PYTHONPATH=$PWD/src:$PWD/benchmarks
timeout 500 python docs/results/scale_h200/s8/lab/attn8.py > $OUT/attn8.txt 2>&1; echo "rc $?"
grep -v "^  skip" $OUT/attn8.txt | tail -70
