# session 12, last call: GPU tests, and the decode step and 1.5B x 4,096 GRPO step with the shipped fp8 weights
# (the lm head in bf16: FP8_LM_HEAD off)
export PYTHONPATH=src:benchmarks
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_fp8_weights.py > $OUT/gpu_tests_2.txt 2>&1; echo "tests rc $?"
timeout 120 python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8,fp8w+kv > $OUT/decode_step_fp8w_3.txt 2>&1; echo "decode rc $?"
timeout 200 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w \
  --set model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate \
  engine_weights_dtype=fp8 > $OUT/scale_15b_wfp8_3.txt 2>&1; echo "scale rc $?"
