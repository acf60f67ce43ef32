#!/bin/bash
# session 9, call E: fp8 decode attention with both dots in e4m3 (wgmma, QGMMA in the SASS), V pages as stored or token-minor
export PYTHONPATH=$PWD/src:$PWD/benchmarks:$PWD/docs/results/scale_h200/s8/lab
timeout 400 python docs/results/scale_h200/s9/lab/attn_layout.py --f8 > $OUT/attn_f8dot.txt 2>&1; echo "rc $?"
grep -v "^  skip" $OUT/attn_f8dot.txt | sort -t'|' -k2,2n -k3,3 -k12,12n | head -80
grep -c skip $OUT/attn_f8dot.txt; grep skip $OUT/attn_f8dot.txt | head -3
