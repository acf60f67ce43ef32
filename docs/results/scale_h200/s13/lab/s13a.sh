# session 13, first call: GPU tests of the fp8 weights (bound 5e-3 not yet run), the decode step's kernels by time,
# and the 1.5B x 4,096 GRPO step with the shipped fp8 weights (bf16 lm head) with its last step under cProfile
export PYTHONPATH=src:benchmarks
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > $OUT/gpu.txt
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_fp8_weights.py > $OUT/gpu_tests_3.txt 2>&1; echo "tests rc $?"
timeout 120 python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv --kernels 30 > $OUT/decode_step_kernels.txt 2>&1; echo "decode rc $?"
timeout 220 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w --profile 45 \
  --set model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate \
  engine_weights_dtype=fp8 > $OUT/scale_15b_wfp8_prof.txt 2>&1; echo "scale rc $?"
