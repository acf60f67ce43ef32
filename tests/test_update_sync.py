"""On a GPU the policy update's passes make no host sync per micro-batch (the batch is moved through pinned memory
without blocking, the ids and padding are checked on the CPU, the loss and metrics add up on the device), so the
CPU queues micro-batch i+1 while the GPU runs micro-batch i: the update is host-bound at small micro-batches
(benchmarks/update_layouts.py). Counted with torch.cuda.set_sync_debug_mode("warn"): the same number of syncs for
one micro-batch as for four. Needs a GPU (skipped on the CPU, where nothing syncs)."""

import dataclasses
import warnings

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
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    out = update(batch)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            assert out["micro_batches"] == 4 // size
            counts[size] = sum("synchroniz" in str(w.message) for w in caught)
        assert counts[1] == counts[4], counts
    finally:
        tr.close()
