# session 14, call 1: the 1.5B x 4,096 update without activation checkpointing, micro-batches of 1-3 sequences,
# against the shipped plan (checkpointing, 39,523-token micro-batches), one call. The limit is raised to 80 GiB
# so the plan's (eager) estimate does not stop the runs; the peaks are measured.
export PYTHONPATH=src:benchmarks
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > $OUT/gpu.txt
run() {  # name, max GiB, extra keys
  timeout 170 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib $2 --steps 3 --work /root/w \
    --set $S $3 > $OUT/$1.txt 2>&1; echo "$1 rc $?"; tail -3 $OUT/$1.txt
}
run nockpt2 80 "model.gradient_checkpointing=false batch.micro_batch_tokens=8600"
run nockpt3 80 "model.gradient_checkpointing=false batch.micro_batch_tokens=12900"
run shipped 40 ""
run nockpt1 80 "model.gradient_checkpointing=false batch.micro_batch_tokens=4300"
