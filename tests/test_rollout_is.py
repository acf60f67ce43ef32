"""algorithm.rollout_is reaches the trainer: with the engine's own logprobs (fp32 on the CPU, equal to the
trainer's) it changes nothing; when the engine reports other logprobs, its weights and cuts follow them."""

import json
import math

import pytest
import torch

from aha.config import ConfigError, load_config
from aha.train.config import TrainConfig
from aha.train.grpo import GRPOTrainer
from test_policy_loss_config import BASE


def run(tmp_path, *extra, shift=0.0):
    out = tmp_path / ("-".join(extra).replace("=", "_") + f"-{shift}")
    trainer = GRPOTrainer(load_config(TrainConfig, None, BASE + [f"out={out}", *extra]))
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    if shift:
        generate = trainer.engine.generate

        def shifted(*a, **k):  # an engine that reports each token exp(shift) times less likely
            comps = generate(*a, **k)
            for c in comps:
                c.logprobs = [x - shift for x in c.logprobs]
            return comps

        trainer.engine.generate = shifted
    try:
        trainer.fit()
        after = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    finally:
        trainer.close()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return before, after, rows[-1]


def test_rollout_is_on_policy_changes_nothing(tmp_path):
    _, w_off, row_off = run(tmp_path)
    _, w_on, row_on = run(tmp_path, "algorithm.rollout_is=token_truncate")
    assert "is_weight_mean" not in row_off
    assert row_off["grad_norm"] > 0  # the step has something to learn
    assert row_on["is_weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert row_on["is_cut_frac"] == 0.0
    assert row_on["loss"] == pytest.approx(row_off["loss"], abs=1e-5)
    for k in w_off:
        torch.testing.assert_close(w_on[k], w_off[k], rtol=1e-4, atol=1e-5)


def test_rollout_is_follows_the_engine_logprobs(tmp_path):
    _, _, row = run(tmp_path, "algorithm.rollout_is=token_truncate", shift=1.0)
    assert row["is_weight_mean"] == pytest.approx(math.e, rel=1e-3)  # e^1 < rollout_is_max 3
    assert row["is_cut_frac"] == 0.0
    _, _, row = run(
        tmp_path, "algorithm.rollout_is=token_truncate", "algorithm.rollout_is_max=2", shift=1.0
    )
    assert row["is_weight_mean"] == pytest.approx(2.0, rel=1e-4)
    assert row["is_cut_frac"] == 1.0
    # every token above the bound is dropped: no gradient, the weights do not move
    before, after, row = run(
        tmp_path, "algorithm.rollout_is=token_mask", "algorithm.rollout_is_max=2", shift=1.0
    )
    assert row["is_cut_frac"] == 1.0 and row["grad_norm"] == 0.0
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "arg, key",
    [
        ("algorithm.rollout_is=token", "rollout_is"),
        ("algorithm.rollout_is_max=0", "rollout_is_max"),
        ("algorithm.rollout_is_min=5", "rollout_is_max"),
    ],
)
def test_rollout_is_config_errors(arg, key):
    with pytest.raises(ConfigError, match=key):
        load_config(TrainConfig, None, BASE + [arg])


def test_trl_names_point_to_rollout_is():
    with pytest.raises(ConfigError, match="algorithm.rollout_is"):
        load_config(TrainConfig, None, BASE + ["vllm_importance_sampling_mode=token_truncate"])
    with pytest.raises(ConfigError, match="algorithm.rollout_is_max"):
        load_config(TrainConfig, None, BASE + ["vllm_importance_sampling_clip_max=2.0"])
