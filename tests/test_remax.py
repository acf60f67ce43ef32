"""ReMax: the estimator by hand, and the trainer's baseline = the reward of each prompt's greedy completion."""

import math

import numpy as np
import pytest
import torch

from aha.algos import get_advantage, remax
from aha.config import load_config
from aha.rollout import HFEngine, SamplingParams
from aha.train.config import TrainConfig
from aha.train.grpo import GRPOTrainer

NAN = float("nan")


def test_remax_hand_values_and_nans():
    adv, m = remax([1.0, 0.0, 1.0, 0.5], 2, baseline=[0.5, 1.0])
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, 0.0, -0.5]))
    assert float(m["reward/greedy"]) == pytest.approx(0.75)
    adv, m = remax([1.0, NAN, 1.0, 0.5, 2.0, 2.0], 2, baseline=[0.5, NAN, 2.0])
    assert adv.tolist() == [
        0.5,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ]  # NaN reward -> 0; NaN baseline -> group 0
    assert float(m["frac_reward_zero_std"]) == pytest.approx(
        2 / 3
    )  # groups 2 and 3 carry no signal
    assert get_advantage("remax") is remax


def test_remax_needs_one_baseline_per_prompt():
    with pytest.raises(ValueError, match="baseline="):
        remax([1.0, 0.0], 2)
    with pytest.raises(ValueError, match="one per prompt"):
        remax([1.0, 0.0, 1.0, 0.0], 2, baseline=[0.5])


BASE = [
    "model.path=tiny-random",
    "task.name=arithmetic",
    "sampling.group_size=4",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=12",
    "logging.progress=false",
    "engine=hf",
    "logging.samples_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
    "rewards.num_workers=1",
    "algorithm.advantage=remax",
    "checkpoint.save_every=0",
]


def test_trainer_baseline_is_the_greedy_completions_reward(tmp_path):
    trainer = GRPOTrainer(load_config(TrainConfig, None, BASE + [f"out={tmp_path}", "steps=2"]))
    try:
        rows = trainer.stream.take(2)
        ids = trainer.rollout.prompt_ids(rows)
        got = trainer.rollout.greedy_rewards(ids, rows)
        greedy = HFEngine(trainer.model, trainer.tok).generate(
            ids,
            SamplingParams(temperature=0, max_tokens=12, stop_token_ids=trainer.rollout.stop_ids),
        )
        want = [c.text.count("7") / max(len(c.text), 1) for c in greedy]
        assert np.allclose(got, want)
        total = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
        adv, m = trainer.advantage(total, got)
        assert torch.allclose(adv.double(), torch.tensor(total - np.repeat(got, 4)), atol=1e-6)
        out = trainer.fit()
        assert out["steps"] == 2 and not out["stopped_early"]
    finally:
        trainer.close()
    import json

    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["reward/greedy"]) for r in rows)
