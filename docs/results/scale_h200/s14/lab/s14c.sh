# session 14, call 3: the update without transformers' packed-sequence sync (train/forward.py unpacked_rows), and
# the memory plan with the compiled-layer estimate and efficient sizes by the layer's weights: the plan's choice
# at 40 GiB (no checkpointing, one-sequence micro-batches) against the previous plan's layout (checkpointing,
# 39,523-token micro-batches) as explicit keys; PDL on in both. GPU tests of the sync fix first.
export PYTHONPATH=src:benchmarks
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
run() {  # name, max GiB, extra keys
  timeout 170 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib $2 --steps 3 --work /root/w \
    --set $S $3 > $OUT/$1.txt 2>&1; echo "$1 rc $?"; tail -2 $OUT/$1.txt
}
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_update_sync.py tests/test_long_forward.py > $OUT/gpu_tests_sync.txt 2>&1; echo "tests rc $?"; tail -2 $OUT/gpu_tests_sync.txt
run scale_15b_plan 40 ""
run scale_15b_ckpt 40 "model.gradient_checkpointing=true batch.micro_batch_tokens=39523"
