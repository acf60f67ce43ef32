#!/bin/bash
export PYTHONPATH=$PWD/src:$PWD/benchmarks
timeout 400 python docs/results/scale_h200/s8/lab/attn8.py --occ > $OUT/attn8_occ.txt 2>&1; echo "rc $?"
grep -v "^  skip" $OUT/attn8_occ.txt | sort -t'|' -k8 -n | head -90
