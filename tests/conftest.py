import os
import sys
from pathlib import Path

import torch

# Tests share 2 cores with everything else; one intra-op thread keeps tiny-model timings stable.
torch.set_num_threads(int(os.environ.get("AHA_TEST_THREADS", "1")))
# Lets configs name test helpers as "reward_fixtures:fn" (user-defined reward functions).
sys.path.insert(0, str(Path(__file__).parent))
