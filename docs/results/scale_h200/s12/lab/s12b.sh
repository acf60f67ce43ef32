# session 12, call 6 (after two calls that carried the GGUF's first parts to /root/w): GPU tests, SmolLM2's
# engine-vs-trainer logprobs with fp8 weights
set -x
cp .lab/p/xac /root/w/ && cat /root/w/xaa /root/w/xab /root/w/xac > /root/w/smol.gguf && ls -la /root/w/smol.gguf
python -m pip install -q --no-index --no-deps --root-user-action=ignore .lab/wh/gguf-*.whl
export PYTHONPATH=src:benchmarks AHA_GGUF_CACHE=/root/w/gc
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_fp8_weights.py > $OUT/gpu_tests.txt 2>&1; echo "tests rc $?"
timeout 200 python docs/results/rollout_is/real_mismatch.py --model /root/w/smol.gguf --prompts 64 --n 8 --new 1024 \
  --device cuda --engines fast,fast-fp8,fast-w8,fast-w8-bf16head,fast-w8-fp8 > $OUT/real_mismatch_3.txt 2>&1; echo "mismatch rc $?"
