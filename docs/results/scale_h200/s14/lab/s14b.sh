# session 14, call 2: programmatic dependent launch (PDL) of the decode kernels: Triton's support here, the GPU
# tests, the decode step with and without it, the shipped GRPO step with it; then a host profile of the update
# without checkpointing on one-sequence micro-batches (where it waits on the host).
export PYTHONPATH=src:benchmarks
python -c "import triton; from triton.backends.nvidia.compiler import CUDAOptions as C; print('triton', triton.__version__, 'launch_pdl', 'launch_pdl' in C.__dataclass_fields__)" > $OUT/triton.txt 2>&1
cat $OUT/triton.txt
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_pdl.py tests/test_attention_fp8.py tests/test_fp8_weights.py tests/test_kv_fp8.py > $OUT/gpu_tests.txt 2>&1; echo "tests rc $?"; tail -2 $OUT/gpu_tests.txt
timeout 150 python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv,fp8w+kv-nopdl,fp8w+kv --kernels 14 > $OUT/decode_pdl.txt 2>&1; echo "decode rc $?"; grep -A5 "^| model" $OUT/decode_pdl.txt
S="model.compile=true kv_cache_dtype=fp8 engine_release=true algorithm.rollout_is=token_truncate engine_weights_dtype=fp8"
timeout 170 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --steps 3 --work /root/w --set $S > $OUT/scale_pdl.txt 2>&1; echo "scale rc $?"; tail -2 $OUT/scale_pdl.txt
timeout 150 python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 80 --steps 2 --work /root/w --profile 45 \
  --set $S model.gradient_checkpointing=false batch.micro_batch_tokens=4300 > $OUT/scale_nockpt1_prof.txt 2>&1; echo "prof rc $?"
