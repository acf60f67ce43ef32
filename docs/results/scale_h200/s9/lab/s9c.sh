#!/bin/bash
# session 9, call C: fp8 decode attention with deeper pipelines / more warps (bytes in flight)
export PYTHONPATH=$PWD/src:$PWD/benchmarks:$PWD/docs/results/scale_h200/s8/lab
timeout 400 python docs/results/scale_h200/s9/lab/attn_layout.py --stages > $OUT/attn_stages.txt 2>&1; echo "rc $?"
grep -v "^  skip" $OUT/attn_stages.txt | sort -t'|' -k3,3 -k8,8n | head -60
grep -c "skip" $OUT/attn_stages.txt; grep skip $OUT/attn_stages.txt | head -3
