# session 16, call 1: the fp8 attention's transposed layout and early loads: GPU tests (both layouts against
# float64, the early-loads race test, PDL in the engine), the early test's negative control, the lab check and
# timing (attn_tr.py), then the decode step with and without the two changes.
export PYTHONPATH=src:benchmarks:tests
L=docs/results/scale_h200/s16/lab
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py tests/test_pdl.py > $OUT/gpu_tests.txt 2>&1; echo "tests rc $?"; grep -E "passed|failed|Error" $OUT/gpu_tests.txt | tail -8
timeout 60 python $L/early_negative.py > $OUT/early_negative.txt 2>&1; echo "negative rc $?"; cut -c1-160 $OUT/early_negative.txt
timeout 170 python $L/attn_tr.py > $OUT/attn_tr.txt 2>&1; rc=$?; echo "attn rc $rc"; grep -v "^FAIL" $OUT/attn_tr.txt | tail -40; grep -m5 "^FAIL" $OUT/attn_tr.txt
[ $rc = 0 ] || exit 1
for f in "TRANSPOSED=0 EARLY_LOADS=0" "TRANSPOSED=1 EARLY_LOADS=1"; do
  timeout 100 python $L/flags.py $f -- benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv > $OUT/decode_$(echo $f | tr -dc 01).txt 2>&1
  echo "decode $f rc $?"; tail -3 $OUT/decode_$(echo $f | tr -dc 01).txt
done
