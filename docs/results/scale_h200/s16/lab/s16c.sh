# session 16, call 3: call 2's race test found Q read before the wait in the ring path (const __restrict__ loads
# moved above it); with those pointers plain and Q's loads volatile: the GPU tests, the negative control, then the
# 1.5B x 4,096 step with two sequences a micro-batch again.
export PYTHONPATH=src:benchmarks:tests
L=docs/results/scale_h200/s16/lab
timeout 170 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py tests/test_pdl.py -k "not every_decode_kernel" > $OUT/gpu_tests.txt 2>&1; rc=$?; echo "tests rc $rc"; grep -E "passed|failed|Error" $OUT/gpu_tests.txt | tail -5
timeout 60 python $L/early_negative.py > $OUT/early_negative.txt 2>&1; echo "negative rc $?"; cut -c1-150 $OUT/early_negative.txt
[ $rc = 0 ] || exit 1
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
timeout 200 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 80 --steps 3 --work /root/w \
  --set $S model.gradient_checkpointing=false batch.micro_batch_tokens=9300 > $OUT/scale_15b_two_tr.txt 2>&1
echo "scale rc $?"; tail -6 $OUT/scale_15b_two_tr.txt
