"""algorithm.policy_loss reaches the trainer: gspo equals ppo_clip on-policy (mu = 1: every ratio is 1) and differs
from it once the policy has moved (mu = 2: GSPO's sequence ratio is clipped at its paper's 3e-4 / 4e-4)."""

import pytest
import torch

from aha.config import ConfigError, load_config
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
    "engine=hf",
    "logging.samples_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
    "rewards.num_workers=1",
    "checkpoint.save_every=0",
    "steps=1",
    "optim.lr=1e-2",
    "optim.warmup_steps=0",
]


def weights_after(tmp_path, *extra):
    out = tmp_path / "-".join(extra).replace("=", "_")
    trainer = GRPOTrainer(load_config(TrainConfig, None, BASE + [f"out={out}", *extra]))
    try:
        trainer.fit()
        return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    finally:
        trainer.close()


def differ(a, b) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_gspo_is_ppo_clip_on_policy_and_differs_off_policy(tmp_path):
    gspo = ["algorithm.policy_loss=gspo", "algorithm.clip_low=3e-4", "algorithm.clip_high=4e-4"]
    w_ppo1, w_gspo1 = (
        weights_after(tmp_path, "algorithm.mu=1"),
        weights_after(tmp_path, "algorithm.mu=1", *gspo),
    )
    for k in w_ppo1:
        assert torch.allclose(w_ppo1[k], w_gspo1[k], atol=1e-6), k
    w_ppo2, w_gspo2 = (
        weights_after(tmp_path, "algorithm.mu=2"),
        weights_after(tmp_path, "algorithm.mu=2", *gspo),
    )
    assert differ(w_ppo1, w_ppo2) and differ(w_ppo2, w_gspo2)


def test_unknown_policy_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="policy_loss.*ppo_clip, gspo"):
        load_config(TrainConfig, None, ["algorithm.policy_loss=grpo"])
