# session 13, third call: the ring with cp.async.ca for K (the .cg copies of s13b each fetched half sectors)
export PYTHONPATH=src:benchmarks
timeout 150 python docs/results/scale_h200/s13/lab/attn_stages.py --bench --few > $OUT/attn_stages_ca.txt 2>&1; echo "lab rc $?"
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py > $OUT/gpu_tests_attn_ca.txt 2>&1; echo "tests rc $?"
