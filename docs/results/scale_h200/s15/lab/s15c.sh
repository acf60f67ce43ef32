# session 15, call 3: the fp8 attention's lazy rescaling (attention_fp8.LAZY_RESCALE) checked and timed against
# every-tile rescaling; GPU tests of the fused decode (an fp32 model keeps cuBLAS's o_proj); then the 1.5B x 4,096
# step with two sequences a micro-batch, and the plan's own layout.
export PYTHONPATH=src:benchmarks
timeout 200 python -m pytest -q -p no:cacheprovider tests/test_fp8_weights.py tests/test_pdl.py tests/test_attention_fp8.py > $OUT/gpu_tests.txt 2>&1; echo "tests rc $?"; tail -2 $OUT/gpu_tests.txt
timeout 200 python docs/results/scale_h200/s15/lab/attn_lazy.py > $OUT/attn_lazy.txt 2>&1; echo "attn rc $?"; cat $OUT/attn_lazy.txt | tail -16
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
run() {  # name, max GiB, extra keys
  timeout 170 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib $2 --steps 3 --work /root/w \
    --set $S $3 > $OUT/$1.txt 2>&1; echo "$1 rc $?"; tail -2 $OUT/$1.txt
}
run scale_15b_two_lazy 80 "model.gradient_checkpointing=false batch.micro_batch_tokens=9300"
run scale_15b_plan_lazy 40 ""
