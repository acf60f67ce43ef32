# session 15, call 1: compiled layers that recompute element-wise work in the backward (aha.models.load.
# RECOMPUTE_ELEMENTWISE): the plan's layout at 40 GiB (one sequence a micro-batch), then two sequences a
# micro-batch (explicit keys, limit raised so the estimate does not stop it), peaks measured. GPU sync tests first
# (the reference pass's readback in update.py is now one copy).
export PYTHONPATH=src:benchmarks
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
run() {  # name, max GiB, extra keys
  timeout 200 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib $2 --steps 3 --work /root/w \
    --set $S $3 > $OUT/$1.txt 2>&1; echo "$1 rc $?"; tail -2 $OUT/$1.txt
}
nvidia-smi --query-gpu=name,memory.used --format=csv
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_update_sync.py tests/test_long_forward.py > $OUT/gpu_tests_sync.txt 2>&1; echo "tests rc $?"; tail -2 $OUT/gpu_tests_sync.txt
run scale_15b_plan 40 ""
run scale_15b_two 80 "model.gradient_checkpointing=false batch.micro_batch_tokens=9300"
