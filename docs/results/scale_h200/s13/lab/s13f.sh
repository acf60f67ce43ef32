# session 13: the shared-memory limit pipeline_for reads on the H200, and the fp8 attention tests through the default
export PYTHONPATH=src:benchmarks
python -c "
import torch
from aha.rollout.fast import attention_fp8 as a
p = torch.cuda.get_device_properties(0)
print('shared_memory_per_block_optin', getattr(p, 'shared_memory_per_block_optin', None))
print('pipeline_for(128, 8)', a.pipeline_for(128, 8, 'cuda'), 'pipeline_for(64, 8)', a.pipeline_for(64, 8, 'cuda'))
" > $OUT/pipeline_for.txt 2>&1; echo "props rc $?"
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_attention_fp8.py > $OUT/gpu_tests_6.txt 2>&1; echo "tests rc $?"
