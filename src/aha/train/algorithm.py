"""The `algorithm` section of the RL config: estimator, loss, clip range, KL, DAPO's knobs and PPO's critic.

Defaults that depend on other keys are resolved on load (so config.yaml shows what ran): the advantage estimator
(grpo, or gae for PPO), its std_scale (each estimator's own: aha.algos.advantages.STD_SCALES_OF), and the clip
range of the policy loss (CLIP_DEFAULTS). The PPO knobs are declared here once; for GRPO they must stay at
their defaults (set they would do nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ..config import check

# The clip range of each policy loss when none is given: PPO's 0.2, and GSPO's (Zheng et al. 2025, sec. 5.1: its
# sequence-level ratio is a geometric mean per token, ~500x closer to 1 than a token ratio).
CLIP_DEFAULTS = {"ppo_clip": (0.2, 0.2), "gspo": (3e-4, 4e-4)}


@dataclass
class AlgorithmConfig:
    # grpo: no critic (group baselines); ppo: a value model (keys below)
    name: Literal["grpo", "ppo"] = "grpo"
    # grpo | dr_grpo | rloo | remax | reinforce++ | reinforce++_baseline | gae; null: grpo, or gae for ppo
    advantage: str | None = None
    # advantages divided by the group's or the batch's reward std, or not; null: the estimator's own (grpo:
    # group; dr_grpo, rloo, remax: none; reinforce++: batch)
    std_scale: Literal["group", "batch", "none"] | None = None
    agg: str = "seq-mean-token-mean"  # token-mean (DAPO) | seq-mean-token-sum-norm (Dr. GRPO)
    # Dr. GRPO's constant normaliser; defaults to sampling.max_new_tokens
    norm_len: int | None = None
    policy_loss: str = "ppo_clip"  # ppo_clip (per-token ratio) | gspo (sequence-level ratio)
    clip_low: float | None = None  # null: 0.2 for ppo_clip, GSPO's 3e-4 for gspo
    clip_high: float | None = None  # null: 0.2 for ppo_clip, 4e-4 for gspo; DAPO clip-higher: 0.28
    clip_c: float | None = None  # dual clip for negative advantages (e.g. 3.0)
    beta: float = 0.0  # KL(pi || pi_ref) weight in the loss; > 0 loads a reference model
    # estimator of the beta KL term (k3: R1's, unbiased, low variance)
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    mu: int = 1  # policy updates per batch; 1 = on-policy (ratio 1, no extra forward)
    entropy_coef: float = 0.0  # weight of an entropy bonus in the loss; 0 = off
    # Rollout correction: weight each token's policy loss by pi_old / pi_engine of its sampled token, to undo the
    # engine's drift from the trained policy (an fp8 KV cache, other kernels; TRL's vllm_importance_sampling_*).
    # off | token_truncate | token_mask | sequence_truncate | sequence_mask (TRL's default with vLLM)
    rollout_is: str = "off"
    # C_max: truncate clips the weight to it, mask drops what is above; null: no upper bound
    rollout_is_max: float | None = 3.0
    # C_min: truncate raises the weight to it, mask drops what is below; null: no lower bound
    rollout_is_min: float | None = None
    # DAPO: drop groups whose rewards are all equal, resample to fill
    dynamic_sampling: bool = False
    # bound on the extra generate calls dynamic sampling may make per step
    max_resample_rounds: int = 3
    mask_truncated: bool = False  # DAPO: truncated completions contribute no loss
    overlong_penalty: bool = False  # DAPO soft overlong punishment (eq. 13), added to the reward
    overlong_cache: int = 64  # L_cache of eq. 13, in tokens
    # PPO only (algorithm.name=ppo): the critic, GAE and the KL in the reward (aha.train.ppo)
    gamma: float = 1.0  # discount; 1 = undiscounted episodes (one completion)
    lam: float = 1.0  # GAE lambda: 1 = Monte Carlo returns minus V (0.95 failed on the demo task)
    whiten_advantages: bool = True  # normalise the batch's advantages to mean 0, std 1
    value_clip: float | None = 0.2  # eps_v of the clipped value loss; null = plain squared error
    value_lr: float | None = None  # critic learning rate; null = optim.lr
    value_model_path: str | None = None  # critic initialisation; null = model.path
    reward_kl_coef: float = 0.0  # c: k1 KL to the reference in the reward (classic RLHF); 0 = off
    # reward_kl_coef fixed, or adapted towards kl_target
    kl_ctrl: Literal["fixed", "adaptive"] = "fixed"
    kl_target: float | None = None  # adaptive: target mean per-sequence KL (sum of k1 over tokens)
    kl_horizon: float = 10000.0  # adaptive: controller horizon, in samples

    PPO_ONLY: ClassVar[tuple[str, ...]] = (
        "gamma",
        "lam",
        "whiten_advantages",
        "value_clip",
        "value_lr",
        "value_model_path",
        "reward_kl_coef",
        "kl_ctrl",
        "kl_target",
        "kl_horizon",
    )

    def __post_init__(self):
        from ..algo_names import (
            ADVANTAGE_NAMES,
            AGGS,
            POLICY_LOSS_NAMES,
            ROLLOUT_IS_MODES,
            STD_SCALES_OF,
        )

        check(
            self.policy_loss in POLICY_LOSS_NAMES,
            "policy_loss",
            f"unknown policy loss {self.policy_loss!r}; choose one of: {', '.join(POLICY_LOSS_NAMES)}",
        )
        low, high = CLIP_DEFAULTS.get(self.policy_loss, (0.2, 0.2))
        self.clip_low = low if self.clip_low is None else self.clip_low
        self.clip_high = high if self.clip_high is None else self.clip_high
        check(
            self.clip_low >= 0 and self.clip_high >= 0,
            "clip_low",
            "clip_low and clip_high must be >= 0 (the paper uses 0.2)",
        )
        check(
            self.clip_c is None or self.clip_c > 1,
            "clip_c",
            f"dual clip must be > 1 (e.g. 3.0), got {self.clip_c}",
        )
        check(self.beta >= 0, "beta", f"the KL weight must be >= 0, got {self.beta}")
        check(
            self.rollout_is in ROLLOUT_IS_MODES,
            "rollout_is",
            f"unknown rollout correction {self.rollout_is!r}; choose one of: {', '.join(ROLLOUT_IS_MODES)}",
        )
        lo, hi = self.rollout_is_min, self.rollout_is_max
        check(
            (lo is None or lo >= 0)
            and (hi is None or hi > 0)
            and (lo is None or hi is None or lo < hi),
            "rollout_is_max",
            f"the weight bounds need 0 <= rollout_is_min < rollout_is_max (e.g. 3.0), got {lo}, {hi}",
        )
        check(self.mu >= 1, "mu", f"policy updates per batch must be >= 1, got {self.mu}")
        check(self.max_resample_rounds >= 0, "max_resample_rounds", "must be >= 0")
        check(self.overlong_cache >= 1, "overlong_cache", "must be >= 1 token")
        check(
            self.agg in AGGS,
            "agg",
            f"unknown aggregation {self.agg!r}; choose one of: {', '.join(AGGS)}",
        )
        if self.advantage is None:
            self.advantage = "gae" if self.name == "ppo" else "grpo"
        if self.name == "ppo":
            self._check_ppo()
            return
        outcome = [n for n in ADVANTAGE_NAMES if n != "gae"]  # gae needs a value model: name=ppo
        check(
            self.advantage in outcome,
            "advantage",
            f"unknown estimator {self.advantage!r}; choose one of: {', '.join(outcome)} "
            "(gae with name=ppo)",
        )
        scales = STD_SCALES_OF[self.advantage]
        self.std_scale = self.std_scale or scales[0]
        check(
            self.std_scale in scales,
            "std_scale",
            f"{self.advantage} takes std_scale {' or '.join(scales)}, got {self.std_scale!r}",
        )
        default = AlgorithmConfig.__dataclass_fields__
        for f in self.PPO_ONLY:  # a PPO knob set for GRPO would do nothing
            check(
                getattr(self, f) == default[f].default,
                f,
                f"is a PPO setting; set algorithm.name=ppo, or remove it for {self.name}",
            )

    def _check_ppo(self) -> None:
        check(
            self.advantage == "gae",
            "advantage",
            f"PPO computes advantages with its value model (GAE), got {self.advantage!r}; set "
            "algorithm.advantage=gae (or use algorithm.name=grpo)",
        )
        check(
            self.std_scale is None,
            "std_scale",
            "PPO scales its token advantages with algorithm.whiten_advantages; leave std_scale unset",
        )
        check(0 <= self.gamma <= 1, "gamma", f"must be in [0, 1], got {self.gamma}")
        check(0 <= self.lam <= 1, "lam", f"must be in [0, 1], got {self.lam}")
        check(
            self.value_clip is None or self.value_clip > 0,
            "value_clip",
            f"must be > 0 (e.g. 0.2) or null for no clip, got {self.value_clip}",
        )
        check(
            self.value_lr is None or self.value_lr > 0,
            "value_lr",
            f"must be > 0, got {self.value_lr}",
        )
        check(
            self.reward_kl_coef >= 0, "reward_kl_coef", f"must be >= 0, got {self.reward_kl_coef}"
        )
        if self.kl_ctrl == "adaptive":
            check(
                self.kl_target is not None and self.kl_target > 0 and self.reward_kl_coef > 0,
                "kl_target",
                "kl_ctrl=adaptive needs kl_target > 0 and a starting reward_kl_coef > 0 (e.g. 0.05)",
            )
        check(self.kl_horizon > 0, "kl_horizon", f"must be > 0, got {self.kl_horizon}")

    def ppo_settings(self) -> dict:
        """The PPO-only knobs by name."""
        return {f: getattr(self, f) for f in self.PPO_ONLY}
