# session 15, call 2: o_proj through linear_partials (fp8_linear's kernel on bf16 operands, PDL prefetch) and the
# split-K partial sums of o_proj and down_proj added by the next RMSNorm (model_runner.FUSED_SUMS): GPU tests, a
# config sweep of the o_proj GEMM alone, the decode step fused vs not, then the 1.5B x 4,096 step with two
# sequences a micro-batch.
export PYTHONPATH=src:benchmarks
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_pdl.py tests/test_fp8_weights.py tests/test_attention_fp8.py tests/test_kv_fp8.py > $OUT/gpu_tests.txt 2>&1; echo "tests rc $?"; tail -2 $OUT/gpu_tests.txt
timeout 60 python docs/results/scale_h200/s15/lab/oproj_sweep.py > $OUT/oproj_sweep.txt 2>&1; echo "sweep rc $?"; head -16 $OUT/oproj_sweep.txt
timeout 150 python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv,fp8w+kv-unfused,fp8w+kv --kernels 12 > $OUT/decode_fused.txt 2>&1; echo "decode rc $?"; grep -A5 "^| model" $OUT/decode_fused.txt
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
timeout 170 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 80 --steps 3 --work /root/w \
  --set $S model.gradient_checkpointing=false batch.micro_batch_tokens=9300 > $OUT/scale_15b_two_fused.txt 2>&1; echo "scale rc $?"; tail -2 $OUT/scale_15b_two_fused.txt
