# session 12, call 3: the per-row fp8 GEMM table, the decode step with fp8 weights, and the 1.5B x 4,096 step
export PYTHONPATH=src:benchmarks
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
timeout 120 python docs/results/scale_h200/s12/lab/fp8lin.py --rows 64 > $OUT/fp8lin_64.txt 2>&1; echo "fp8lin rc $?"
timeout 200 python benchmarks/decode_step.py --cases 1.5b:2048 --paths packed,fp8,fp8w,fp8w+kv > $OUT/decode_step_fp8w.txt 2>&1; echo "decode rc $?"
for W in fp8 auto; do
  timeout 150 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w \
    --set model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate \
    engine_weights_dtype=$W > $OUT/scale_15b_w$W.txt 2>&1; echo "scale $W rc $?"
done
tail -5 $OUT/*.txt
