"""aha.algos: pure tensor math of RL for LLMs (no model, no config, no torch.distributed).

advantages: grpo, rloo, remax, reinforce_pp, gae (+ token_level_rewards, zero_std_groups), get_advantage
kl:         kl_estimate (= kl.kl: k1/k2/k3 estimators), FixedKLController, AdaptiveKLController, kl_controller
losses:     policy_loss (PPO clip, clip-higher, dual clip), gspo_loss, value_loss, agg_loss, get_policy_loss,
            rollout_is_weights (truncated / masked importance sampling against the engine's logprobs)
logprobs:   token_logprobs_entropy (chunked, recomputing backward), logprobs_from_logits
masked:     masked_mean, masked_var, masked_whiten
"""

# The estimator is exported as kl_estimate so that `aha.algos.kl` stays the module (`aha.algos.kl.kl(...)`).
from . import kl
from .advantages import (
    ADVANTAGES,
    gae,
    get_advantage,
    grpo,
    reinforce_pp,
    remax,
    rloo,
    token_level_rewards,
    zero_std_groups,
)
from .kl import KL_ESTIMATORS, AdaptiveKLController, FixedKLController, kl_controller
from .kl import kl as kl_estimate
from .logprobs import entropy_from_logits, logprobs_from_logits, token_logprobs_entropy
from .losses import (
    AGGS,
    POLICY_LOSSES,
    agg_denominator,
    agg_loss,
    get_policy_loss,
    gspo_loss,
    policy_loss,
    rollout_is_weights,
    value_loss,
)
from .masked import masked_mean, masked_sum, masked_var, masked_whiten

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
    "rollout_is_weights",
    "value_loss",
    "entropy_from_logits",
    "logprobs_from_logits",
    "token_logprobs_entropy",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
]
