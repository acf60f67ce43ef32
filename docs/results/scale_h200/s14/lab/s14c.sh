# session 14, call 3: the update without transformers' packed-sequence sync (train/forward.py unpacked_rows):
# no checkpointing on one-sequence micro-batches (explicit keys, limit raised so the plan's estimate does not stop
# it) and the shipped plan (checkpointing, 39,523-token micro-batches), PDL on in both.
export PYTHONPATH=src:benchmarks
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
run() {  # name, max GiB, extra keys
  timeout 170 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib $2 --steps 3 --work /root/w \
    --set $S $3 > $OUT/$1.txt 2>&1; echo "$1 rc $?"; tail -2 $OUT/$1.txt
}
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_update_sync.py tests/test_long_forward.py tests/test_memory.py > $OUT/gpu_tests_sync.txt 2>&1; echo "tests rc $?"; tail -2 $OUT/gpu_tests_sync.txt
run nosync_nockpt1 80 "model.gradient_checkpointing=false batch.micro_batch_tokens=4300"
run nosync_shipped 40 ""
