"""aha.algos: pure tensor math of RL for LLMs (no model, no config, no torch.distributed).

advantages: grpo, rloo, remax, reinforce_pp, gae (+ token_level_rewards, zero_std_groups), get_advantage
kl:         kl_estimate (= kl.kl: k1/k2/k3 estimators), FixedKLController, AdaptiveKLController, kl_controller
losses:     policy_loss (PPO clip, clip-higher, dual clip), gspo_loss, value_loss, agg_loss, get_policy_loss
logprobs:   token_logprobs_entropy (chunked, recomputing backward), logprobs_from_logits
masked:     masked_mean, masked_var, masked_whiten
"""

import importlib

# name -> the submodule that defines it, imported on first use (PEP 562): importing aha.algos (or its torch-free
# aha.algos.names, which a config reads) does not import torch. The estimator is exported as kl_estimate so that
# `aha.algos.kl` stays the module (`aha.algos.kl.kl(...)`).
_FROM = {
    **dict.fromkeys(
        ["ADVANTAGES", "get_advantage", "gae", "grpo", "reinforce_pp", "remax", "rloo"],
        "advantages",
    ),
    **dict.fromkeys(["token_level_rewards", "zero_std_groups"], "advantages"),
    **dict.fromkeys(
        ["KL_ESTIMATORS", "AdaptiveKLController", "FixedKLController", "kl_controller"], "kl"
    ),
    **dict.fromkeys(
        ["entropy_from_logits", "logprobs_from_logits", "token_logprobs_entropy"], "logprobs"
    ),
    **dict.fromkeys(
        ["POLICY_LOSSES", "agg_denominator", "agg_loss", "get_policy_loss", "gspo_loss"], "losses"
    ),
    **dict.fromkeys(["policy_loss", "value_loss"], "losses"),
    **dict.fromkeys(["masked_mean", "masked_sum", "masked_var", "masked_whiten"], "masked"),
    "AGGS": "names",
}


def __getattr__(name: str):
    if name == "kl":
        return importlib.import_module(f"{__name__}.kl")
    if name == "kl_estimate":
        return importlib.import_module(f"{__name__}.kl").kl
    if name in _FROM:
        return getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADVANTAGES",
    "get_advantage",
    "gae",
    "grpo",
    "reinforce_pp",
    "remax",
    "rloo",
    "token_level_rewards",
    "zero_std_groups",
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "kl",
    "kl_estimate",
    "kl_controller",
    "AGGS",
    "POLICY_LOSSES",
    "agg_denominator",
    "agg_loss",
    "get_policy_loss",
    "gspo_loss",
    "policy_loss",
    "value_loss",
    "entropy_from_logits",
    "logprobs_from_logits",
    "token_logprobs_entropy",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
]
