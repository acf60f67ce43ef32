# session 16, call 4 (typed as one command, recorded here): the plan's own layout under 40 GiB with the shipped keys
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
PYTHONPATH=src:benchmarks timeout 230 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 \
  --work /root/w --set $S > $OUT/scale_15b_plan_tr.txt 2>&1
