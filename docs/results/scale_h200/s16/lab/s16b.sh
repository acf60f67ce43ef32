# session 16, call 2: GPU tests with a longer limit (call 1's 150 s cut them at ~95%, all passing), the early
# test's negative control with the kernel compiled before the writer's launch, then the 1.5B x 4,096 step with
# two sequences a micro-batch.
export PYTHONPATH=src:benchmarks:tests
L=docs/results/scale_h200/s16/lab
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py tests/test_pdl.py > $OUT/gpu_tests.txt 2>&1; echo "tests rc $?"; grep -E "passed|failed|Error" $OUT/gpu_tests.txt | tail -8
timeout 60 python $L/early_negative.py > $OUT/early_negative.txt 2>&1; echo "negative rc $?"; cut -c1-160 $OUT/early_negative.txt
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
timeout 200 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 80 --steps 3 --work /root/w \
  --set $S model.gradient_checkpointing=false batch.micro_batch_tokens=9300 > $OUT/scale_15b_two_tr.txt 2>&1
echo "scale rc $?"; tail -8 $OUT/scale_15b_two_tr.txt
