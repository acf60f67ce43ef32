"""PPO end to end on a tiny random model: the GAE wiring against a per-sequence reference, the critic fits a
fixed batch, the learnable reward rises, checkpoints hold the critic and resume exactly."""

import json
import math
from pathlib import Path

import pytest
import torch

from aha import algos
from aha.config import ConfigError, load_config
from aha.train.algorithm import AlgorithmConfig
from aha.train.batching import build_batch
from aha.train.config import TrainConfig
from aha.train.ppo import PPOTrainer, train
from aha.train.update import equal_passes

ROOT = Path(__file__).resolve().parents[1]
BASE = [
    "model.path=tiny-random",
    "task.name=arithmetic",
    "sampling.group_size=4",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=12",
    "logging.progress=false",
    "logging.samples_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
    "rewards.num_workers=1",
    "algorithm.name=ppo",
    "algorithm.advantage=gae",
    "algorithm.agg=token-mean",
]


def cfg(tmp_path, *extra):
    return load_config(TrainConfig, None, BASE + [f"out={tmp_path}", *extra])


def metrics(run):
    return [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    # only_some: NaN (does not apply) for half of the prompts, 0/1 for the rest; temperature != 1 and micro-batches
    # of 2 check that logprobs, values and the padding cut line up with a plain per-sequence forward.
    c = cfg(
        tmp_path_factory.mktemp("ppo"),
        "rewards.funcs=[{name: 'reward_fixtures:only_some'}]",
        "optim.lr=1e-2",
        "batch.micro_batch_size=2",
        "sampling.temperature=0.7",
        "algorithm.gamma=0.9",
        "algorithm.lam=0.8",
        "algorithm.reward_kl_coef=0.1",
        "algorithm.whiten_advantages=false",
        "algorithm.value_lr=1e-3",
    )
    tr = PPOTrainer(c)
    yield tr
    tr.close()


def reference(tr, ids, comps, total):
    """Per-sequence, unpadded, full-vocabulary forwards: token rewards, values and mask as (B, L-1) tensors."""
    temp, c, B = tr.cfg.sampling.temperature, tr.critic.kl_ctl.value, len(comps)
    T = max(len(ids[x.prompt_index]) + len(x.token_ids) for x in comps) - 1
    r, v, m = torch.zeros(B, T), torch.zeros(B, T), torch.zeros(B, T, dtype=torch.bool)
    seq_kl = []
    for i, comp in enumerate(comps):
        prompt = ids[comp.prompt_index]
        seq = torch.tensor([prompt + comp.token_ids])
        tgt = seq[0, 1:, None]
        with torch.no_grad(), tr.critic.kl_ref() as ref_model:
            logp = torch.log_softmax(tr.model(seq).logits[0, :-1] / temp, -1).gather(1, tgt)[:, 0]
            ref_logp = torch.log_softmax(ref_model(seq).logits[0, :-1] / temp, -1).gather(1, tgt)[
                :, 0
            ]
            vals = tr.critic.value(seq)[0, :-1]
        s, n = (
            len(prompt) - 1,
            len(comp.token_ids),
        )  # target index of the first completion token, count
        m[i, s : s + n] = True
        k1 = (logp - ref_logp)[s : s + n]
        r[i, s : s + n] = -c * k1
        r[i, s + n - 1] += 0.0 if math.isnan(total[i]) else total[i]
        v[i, : len(vals)] = vals
        seq_kl.append(float(k1.sum()))
    return r, v, m, sum(seq_kl) / B


def test_trainer_advantages_are_gae_of_per_sequence_rewards_and_values(trainer):
    trainer.train_step(1)  # lr 1e-2: the policy leaves the reference, so k1 != 0
    seen = {}
    rollout, critic_advantages = trainer.rollout, trainer.critic.advantages

    class PatchedRollout:  # the rollout stage, with rewards that do not apply (NaN -> 0) and a fraction
        def __getattr__(self, name):
            return getattr(rollout, name)

        def __call__(self, step):
            rb = rollout(step)
            rb.rewards[[0, 5]], rb.rewards[2] = float("nan"), 0.25
            seen["got"] = rb
            return rb

    def advantages(batch, rewards, passes, update):  # called before this step's updates
        rb = seen["got"]
        seen["ref"] = reference(trainer, rb.ids, rb.completions, rb.rewards)
        seen["out"] = critic_advantages(batch, rewards, passes, update)
        return seen["out"]

    trainer.rollout, trainer.critic.advantages = PatchedRollout(), advantages
    try:
        step_metrics = trainer.train_step(2)
    finally:
        trainer.rollout = rollout
        del trainer.critic.advantages
    r, v, m, kl_ref = seen["ref"]
    batch, adv_metrics = seen["out"]
    assert (
        abs(kl_ref) > 1e-4 and r.abs().max() > 1e-3 and v.abs().max() > 1e-3
    )  # the test has teeth
    want_adv, want_ret = algos.gae(r, v, m, gamma=0.9, lam=0.8)
    torch.testing.assert_close(batch.loss_mask.bool(), m)
    torch.testing.assert_close(batch.old_values, torch.where(m, v, 0.0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch.advantages, want_adv, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch.returns, want_ret, rtol=1e-4, atol=1e-5)
    assert adv_metrics["kl_reward"] == pytest.approx(kl_ref, rel=1e-3, abs=1e-6)
    # micro-batch selection cuts the per-token PPO fields exactly like Batch cuts its own
    sub = batch.select([1, 3])
    L = sub.loss_mask.shape[1]
    assert torch.equal(sub.advantages, batch.advantages[[1, 3], :L]) and torch.equal(
        sub.returns, batch.returns[[1, 3], :L]
    )
    for key in (
        "value/loss",
        "value/explained_variance",
        "value/clip_frac",
        "value/grad_norm",
        "loss",
        "kl",
        "kl_coef",
        "kl_reward",
        "reward/mean",
        "grad_norm",
    ):
        assert math.isfinite(step_metrics[key]), key


def test_value_loss_decreases_on_a_fixed_batch(trainer):
    rb = trainer.rollout(3)
    batch = build_batch(rb.ids, rb.completions, None, trainer.tok.pad_token_id)
    mbs = equal_passes(batch, trainer.cfg.batch, trainer.dist)
    rewards = torch.as_tensor(rb.rewards, dtype=torch.float32)
    ppo_batch, _ = trainer.critic.advantages(batch, rewards, mbs, trainer.update)
    value_clip = trainer.critic.value_clip
    trainer.critic.value_clip = None
    try:
        losses = [trainer.critic.update(ppo_batch, mbs)["value/loss"] for _ in range(12)]
    finally:
        trainer.critic.value_clip = value_clip
    assert (
        all(b < a for a, b in zip(losses[:4], losses[1:5])) and max(losses[-3:]) < 0.65 * losses[0]
    ), losses


def test_global_whitening_is_masked_whiten_in_one_process(trainer):
    g = torch.Generator().manual_seed(0)
    x, m = torch.randn(5, 9, generator=g), torch.rand(5, 9, generator=g) > 0.4
    torch.testing.assert_close(trainer.critic.whiten(x, m), algos.masked_whiten(x, m))


def test_learns_trivial_reward_and_saves_the_critic(tmp_path):
    train(
        cfg(
            tmp_path,
            "steps=16",
            "optim.lr=1e-2",
            "sampling.group_size=8",
            "batch.micro_batch_size=16",
        )
    )
    rows = metrics(tmp_path)
    for key in (
        "reward/mean",
        "loss",
        "value/loss",
        "value/explained_variance",
        "value/clip_frac",
        "value/mean",
        "grad_norm",
        "value/grad_norm",
        "entropy",
    ):
        assert all(r[key] is not None and math.isfinite(r[key]) for r in rows), key
    first = sum(r["reward/mean"] for r in rows[:4]) / 4
    last = sum(r["reward/mean"] for r in rows[-4:]) / 4
    assert first < 0.05 and last > 3 * first + 0.05, (first, last)
    from transformers import AutoModel, AutoModelForCausalLM

    ck = tmp_path / "checkpoints" / "step-000016"
    AutoModelForCausalLM.from_pretrained(ck)
    assert AutoModel.from_pretrained(ck / "value").config.num_hidden_layers == 2


def test_resume_continues_exactly(tmp_path):
    extra = [
        "steps=4",
        "optim.lr=1e-2",
        "algorithm.mu=2",
        "optim.schedule=cosine",
        "optim.warmup_steps=1",
    ]
    extra += [
        "algorithm.reward_kl_coef=0.1",
        "algorithm.kl_ctrl=adaptive",
        "algorithm.kl_target=1e-4",
        "algorithm.kl_horizon=40",
        "algorithm.value_lr=3e-3",
    ]
    train(cfg(tmp_path / "full", *extra))
    part = PPOTrainer(cfg(tmp_path / "part", *extra))
    step = part.train_step

    def stop_after_2(k):  # as if SIGTERM arrived during step 2
        part.stop_requested = k == 2
        return step(k)

    part.train_step = stop_after_2
    try:
        assert part.fit()["steps"] == 2
    finally:
        part.close()
    train(cfg(tmp_path / "part", *extra, "resume=true"))
    full, part = metrics(tmp_path / "full"), metrics(tmp_path / "part")
    assert [r["step"] for r in part] == [1, 2, 3, 4]
    assert full[-1]["kl_coef"] != 0.1  # the adaptive coefficient moved
    for a, b in zip(full, part):
        for key in (
            "reward/mean",
            "loss",
            "kl",
            "grad_norm",
            "lr",
            "value/loss",
            "value/grad_norm",
            "value/lr",
            "value/explained_variance",
            "kl_coef",
            "kl_reward",
        ):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)


def test_config_errors_and_preset(tmp_path):
    with pytest.raises(ConfigError, match="algorithm.advantage=gae"):
        PPOTrainer(
            load_config(TrainConfig, None, BASE + ["algorithm.advantage=grpo", f"out={tmp_path}"])
        )
    with pytest.raises(ConfigError, match="kl_target"):
        AlgorithmConfig(name="ppo", kl_ctrl="adaptive", reward_kl_coef=0.05)
    with pytest.raises(ConfigError, match="lam"):
        AlgorithmConfig(name="ppo", lam=1.5)
    c = load_config(TrainConfig, ROOT / "configs" / "ppo.yaml", [])
    assert c.algorithm.name == "ppo" and c.algorithm.advantage == "gae"
    assert (
        c.algorithm.ppo_settings() == AlgorithmConfig(name="ppo").ppo_settings()
    )  # the preset states the PPO defaults
