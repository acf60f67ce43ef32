"""On a GPU aha's own code reads nothing back per micro-batch in the policy update (the batch moves through pinned
memory without blocking, ids and padding are checked on the CPU, loss and metrics add up on the device), so the
CPU can queue work ahead of the GPU: the update is host-bound at small micro-batches (benchmarks/update_layouts.py).
Counted with torch.cuda.set_sync_debug_mode("warn"), by the source line that syncs: no line, aha's or a
library's, syncs more often with four micro-batches than with one (transformers' packed-sequence check, once per
forward when no mask is passed, is skipped: train/forward.py unpacked_rows). The reference model's no-grad pass
is included (beta > 0); the shared-prompt forward, which reads prompt lengths, is off. Needs a GPU (skipped on
the CPU, where nothing syncs)."""

import dataclasses
import warnings
from collections import Counter

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_syncs_do_not_grow_with_micro_batches(tmp_path):
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.grpo import GRPOTrainer

    cfg = load_config(
        TrainConfig,
        None,
        [
            "model.path=tiny-random",
            "model.device=cuda",
            "steps=1",
            "batch.prompts_per_step=2",
            "sampling.group_size=2",
            "sampling.max_new_tokens=8",
            "logging.progress=false",
            "memory.plan=off",
            "batch.share_prefix=false",
            "algorithm.beta=0.1",
            f"out={tmp_path}",
        ],
    )
    tr = GRPOTrainer(cfg)
    seen, update = [], tr.update
    tr.update = lambda batch: seen.append(batch) or update(batch)
    generate = tr.engine.generate
    tr.engine.generate = lambda ids, p, **kw: generate(
        ids, dataclasses.replace(p, stop_token_ids=()), **kw
    )  # forced lengths: every row has tokens to train on
    try:
        tr.train_step(1)
        (batch,) = seen
        counts = {}
        for size in (4, 1):  # 1 micro-batch, then 4
            cfg.batch.micro_batch_size = size
            batch.ref_logp = None  # so that the reference's no-grad pass runs again
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    out = update(batch)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            assert out["micro_batches"] == 4 // size
            syncs = [w for w in caught if "synchroniz" in str(w.message)]
            assert syncs  # the check sees syncs at all (e.g. the pass's finiteness check)
            counts[size] = Counter(f"{w.filename}:{w.lineno}" for w in syncs)
        # counts[4]: one micro-batch of 4 rows; counts[1]: four of 1
        grown = {k: (counts[4][k], n) for k, n in counts[1].items() if n > counts[4][k]}
        assert not grown, grown  # source lines that sync once per micro-batch
    finally:
        tr.close()
