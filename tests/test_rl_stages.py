"""The RL trainers' stages on a tiny random model: the advantage honours std_scale for every estimator, the
policy update takes the temperature the batch was sampled at (not the config's), and frac_reward_zero_std has
one meaning whatever the estimator."""

import numpy as np
import pytest
import torch

from aha.algos import rloo, zero_std_groups
from aha.config import load_config
from aha.rollout import HFEngine
from aha.schema import SamplingConfig
from aha.train.batching import build_batch
from aha.train.config import TrainConfig
from aha.train.dist import Dist
from aha.train.forward import sequence_logprobs
from aha.train.grpo import GRPOTrainer, OutcomeAdvantage
from aha.train.update import PolicyUpdate

BASE = [
    "model.path=tiny-random",
    "task.name=arithmetic",
    "sampling.group_size=4",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=10",
    "logging.progress=false",
    "engine=hf",
    "logging.samples_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
    "rewards.num_workers=1",
    "checkpoint.save_every=0",
]


def test_outcome_advantage_honours_std_scale_beyond_grpo():
    """Before, the trainer passed std_scale to plain GRPO only: rloo with std_scale=group was unscaled."""
    cfg = load_config(TrainConfig, None, ["algorithm.advantage=rloo", "algorithm.std_scale=group"])
    r = np.array([1.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 1.0])
    adv, _ = OutcomeAdvantage(cfg.algorithm, 4, Dist())(r)
    want, _ = rloo(r, 4, std_scale="group")
    plain, _ = rloo(r, 4)
    torch.testing.assert_close(adv, want.float())
    assert not torch.allclose(adv, plain.float())


def test_policy_logprobs_take_the_batchs_sampling_temperature():
    """The config says 1.0; the completions were sampled at 0.5: the trainer's logprobs must be the engine's."""
    from aha.models.load import load_model

    cfg = load_config(TrainConfig, None, BASE + ["sampling.temperature=1.0"])
    model, tok = load_model("tiny-random", device="cpu", seed=0)
    model.eval()
    ids = [
        tok("12+34", add_special_tokens=False).input_ids,
        tok("7*8=", add_special_tokens=False).input_ids,
    ]
    update = PolicyUpdate(
        cfg,
        dist=Dist(),
        device=torch.device("cpu"),
        policy=model,
        ref=None,
        optimizer=None,
        scheduler=None,
    )
    for temperature in (0.5, 0.0):
        params = SamplingConfig(temperature=temperature, max_new_tokens=6).params(2, [], seed=0)
        comps = HFEngine(model, tok).generate(ids, params)
        batch = build_batch(ids, comps, torch.zeros(len(comps)), tok.pad_token_id, params=params)
        logp = update.logprobs_no_grad(model, batch, [list(range(len(comps)))])
        mask = batch.loss_mask.bool()
        torch.testing.assert_close(logp[mask], batch.sampler_logp[mask], atol=2e-4, rtol=1e-4)
        at_config, _ = sequence_logprobs(
            model, batch.input_ids, batch.attention_mask, temperature=1.0
        )
        if temperature:  # the config's temperature would not match the engine's logprobs
            assert (at_config[mask] - batch.sampler_logp[mask]).abs().max() > 1e-2


@pytest.fixture(scope="module")
def remax_trainer(tmp_path_factory):
    out = tmp_path_factory.mktemp("remax")
    tr = GRPOTrainer(
        load_config(TrainConfig, None, BASE + ["algorithm.advantage=remax", f"out={out}"])
    )
    yield tr
    tr.close()


def test_frac_reward_zero_std_is_the_groups_not_the_estimators(remax_trainer):
    """ReMax's own statistic counts groups equal to their greedy baseline; the logged one (as for every other
    estimator) counts groups whose rewards are all equal. Before, ReMax's overwrote it."""
    tr = remax_trainer
    rollout = tr.rollout

    class Fixed:
        def __getattr__(self, name):
            return getattr(rollout, name)

        def __call__(self, step):
            rb = rollout(step)
            rb.rewards[:] = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # group 0 all equal
            return rb

        def greedy_rewards(self, ids, rows):
            return np.array([0.5, 0.5])  # no group equals its baseline

    tr.rollout = Fixed()
    try:
        m = tr.train_step(1)
    finally:
        tr.rollout = rollout
    assert m["frac_reward_zero_std"] == pytest.approx(0.5)
    assert float(zero_std_groups(np.array([1.0, 1, 1, 1, 0, 1, 0, 1]), 4).float().mean()) == 0.5
    assert m["reward/greedy"] == pytest.approx(0.5)
