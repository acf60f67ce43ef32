#!/bin/bash
# session 9, call D: the plan's layout order at 512 tokens: checkpointing with the KV cache kept vs released
export PYTHONPATH=$PWD/src:$PWD/benchmarks
for i in 1 2; do
for rel in false true; do
timeout 200 python benchmarks/scale.py --models 0.5b --new 512 --max-memory-gib 16 --steps 6 --work /root/w --set model.compile=true model.gradient_checkpointing=true engine_release=$rel > $OUT/scale_05b_16gib_release_${rel}_$i.txt 2>&1; echo "release=$rel run $i rc $?"
grep "chosen" $OUT/scale_05b_16gib_release_${rel}_$i.txt; grep -A2 "^| model" $OUT/scale_05b_16gib_release_${rel}_$i.txt | tail -1; grep "time split" $OUT/scale_05b_16gib_release_${rel}_$i.txt | head -1
done; done
