"""engine_release: the fast engine frees its KV cache before each update and the run is otherwise unchanged
(same samples, losses and weights as without it), on the CPU with the fast engine."""

import json

import torch

from aha.config import load_config
from aha.train.config import TrainConfig
from aha.train.grpo import GRPOTrainer

BASE = [
    "model.path=tiny-random",
    "task.name=arithmetic",
    "sampling.group_size=4",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=12",
    "logging.progress=false",
    "engine=fast",
    "logging.samples_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
    "rewards.num_workers=1",
    "checkpoint.save_every=0",
    "steps=2",
    "optim.lr=1e-3",
    "optim.warmup_steps=0",
]


def run(tmp_path, release: bool):
    out = tmp_path / f"release-{release}"
    trainer = GRPOTrainer(
        load_config(TrainConfig, None, BASE + [f"out={out}", f"engine_release={release}"])
    )
    released = []
    original = trainer.engine.release
    trainer.engine.release = lambda: (released.append(trainer.engine.cache is not None), original())
    try:
        trainer.fit()
        weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        cache_after = trainer.engine.cache
    finally:
        trainer.close()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, weights, released, cache_after


def test_release_frees_the_cache_and_changes_nothing_else(tmp_path):
    rows_a, w_a, rel_a, cache_a = run(tmp_path, False)
    rows_b, w_b, rel_b, cache_b = run(tmp_path, True)
    assert rel_a == [] and cache_a is not None  # off: the cache is kept through the update
    assert rel_b == [True, True] and cache_b is None  # on: a held cache is freed before each update
    for a, b in zip(rows_a, rows_b):
        for key in ("reward/mean", "len/mean", "loss", "grad_norm", "entropy"):
            assert a[key] == b[key], key
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
