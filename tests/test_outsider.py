"""Defects found walking the built wheel as an outside user (issue 18's "Done when"), one test each."""

from __future__ import annotations

import pytest

from aha.config import ConfigError, load_config
from aha.train.config import TrainConfig


@pytest.mark.parametrize(
    "override, aha_key",
    [
        ("kl_loss_coef=0.1", "algorithm.beta"),  # verl's leaf name without actor_rollout_ref.actor.
        ("actor.kl_loss_coef=0.1", "algorithm.beta"),
        ("entropy_coeff=0.01", "algorithm.entropy_coef"),
        ("clip_ratio_high=0.28", "algorithm.clip_high"),
        ("adv_estimator=rloo", "algorithm.advantage"),
        ("total_training_steps=3", "steps"),
    ],
)
def test_verl_leaf_names_without_their_section_give_the_aha_key(override, aha_key):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, [override])
    assert e.value.key == override.split("=")[0]
    assert str(e.value).endswith(f"aha's is {aha_key}") or f"aha's is {aha_key} (" in str(e.value)


def test_generic_leaf_names_are_not_guessed_as_verl_names():
    # `n` is verl's rollout.n, but a bare `n` (or `path`) is too generic to name a key from
    with pytest.raises(ConfigError, match="unknown key; valid keys here"):
        load_config(TrainConfig, None, ["n=4"])
