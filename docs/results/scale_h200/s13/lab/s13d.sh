# session 13, fourth call: two tiles a step in the ring (one softmax update per 32 keys, 4 interleaved S chains),
# down's split-K partials summed by the next RMSNorm, GEMM split counts other than powers of 2
export PYTHONPATH=src:benchmarks
timeout 200 python docs/results/scale_h200/s13/lab/attn_stages.py --bench --few --check > $OUT/attn_tiles.txt 2>&1; echo "lab rc $?"
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py tests/test_fp8_weights.py > $OUT/gpu_tests_4.txt 2>&1; echo "tests rc $?"
timeout 100 python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv --kernels 12 > $OUT/decode_step_4.txt 2>&1; echo "decode rc $?"
timeout 150 python docs/results/scale_h200/s13/lab/fp8split.py > $OUT/fp8split.txt 2>&1; echo "split rc $?"
