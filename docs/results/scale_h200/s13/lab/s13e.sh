# session 13, last call: the ring with two tiles a step only from PAIR_FROM tiles a warp (the shipped default),
# its GPU tests, and the 1.5B x 4,096 GRPO step with everything of this session (host metrics, batch decode)
export PYTHONPATH=src:benchmarks
timeout 100 python docs/results/scale_h200/s13/lab/attn_stages.py --bench --few > $OUT/attn_switch.txt 2>&1; echo "lab rc $?"
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py > $OUT/gpu_tests_5.txt 2>&1; echo "tests rc $?"
timeout 240 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w \
  --set model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate \
  engine_weights_dtype=fp8 > $OUT/scale_15b_s13.txt 2>&1; echo "scale rc $?"
