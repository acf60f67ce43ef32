"""The names of aha.algos' registered estimators, losses and aggregations, as plain data, so that a config is
validated without importing torch (`aha train --help` and a one-line config error in well under a second).
It sits outside aha/algos/ because importing anything there runs that package's __init__, which imports the
torch math. The registries (algos.ADVANTAGES, algos.POLICY_LOSSES) hold the functions under exactly these
names (tests/test_cli.py checks it)."""

# The std_scale each outcome estimator accepts, its default (what it does when none is given) first.
STD_SCALES_OF = {
    "grpo": ("group", "batch", "none"),
    "dr_grpo": ("none", "group", "batch"),
    "rloo": ("none", "group", "batch"),
    "remax": ("none",),
    "reinforce++": ("batch", "none"),
    "reinforce++_baseline": ("batch", "none"),
}
# the outcome estimators, then the value-based one (PPO's)
ADVANTAGE_NAMES = (*STD_SCALES_OF, "gae")
POLICY_LOSS_NAMES = ("ppo_clip", "gspo")
AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
# rollout correction (aha.algos.rollout_is_weights): truncated or masked importance sampling, per token or sequence
ROLLOUT_IS_MODES = ("off", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
