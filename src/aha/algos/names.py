"""The names of the registered estimators, losses and aggregations, as plain data (no torch), so that a config
is validated before torch is imported (`aha train --help`, a one-line config error in well under a second).
The registries (advantages.ADVANTAGES, losses.POLICY_LOSSES) hold the functions under exactly these names
(tests/test_cli.py checks it)."""

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
