import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels are tested through Triton's interpreter (tests/test_fast_engine_triton.py
    # turns them on per test); everywhere else the engine uses its torch fallbacks, which are fast on the CPU.
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("AHA_FAST_TRITON", "0")
# No cache of dequantized .gguf files (aha.models.gguf_cache) unless a test asks for one: none in ~/.cache, and no
# test reads another's.
os.environ["AHA_GGUF_CACHE"] = "0"
# Tests share 2 cores with everything else; one intra-op thread keeps tiny-model timings stable.
torch.set_num_threads(int(os.environ.get("AHA_TEST_THREADS", "1")))
# Lets configs name test helpers as "reward_fixtures:fn" (user-defined reward functions).
sys.path.insert(0, str(Path(__file__).parent))
