# session 13, second call: the cp.async ring for the fp8 decode attention (lab), GPU tests, the decode step
export PYTHONPATH=src:benchmarks
timeout 200 python docs/results/scale_h200/s13/lab/attn_stages.py --bench --check > $OUT/attn_stages.txt 2>&1; echo "lab rc $?"
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py tests/test_kv_fp8.py > $OUT/gpu_tests_attn.txt 2>&1; echo "tests rc $?"
timeout 120 python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv --kernels 12 > $OUT/decode_step_ring.txt 2>&1; echo "decode rc $?"
