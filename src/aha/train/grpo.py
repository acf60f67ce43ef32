"""The RL loop of R1-Zero: GRPO (and its Dr. GRPO / DAPO variants, RLOO, ReMax, REINFORCE++) on rule-based rewards.

One step (DeepSeekMath eq. 21 / R1 eq. 1):
    prompts q_1..q_P  --engine-->  G completions o_i each (temperature T)  --rewards-->  r_i
    A_i = (r_i - mean_g(r)) / (std_g(r) + eps)                             (aha.algos.advantages)
    L = agg_t[ -min(rho_t A_i, clip(rho_t, 1-e_low, 1+e_high) A_i) ] + beta * agg_t[KL_k3(pi || pi_ref)]
    with rho_t = pi(o_t) / pi_old(o_t); mu = 1 makes pi_old = pi (ratio 1), mu > 1 reuses the batch mu times.
Departures from the paper, all configurable: the KL term is off by default (beta = 0, as in Dr. GRPO and
DAPO); logits are divided by the sampling temperature in the trainer so pi is the sampled distribution.

Under torchrun each rank takes a contiguous share of the step's P prompts (groups never split), advantages are
computed on the gathered rewards of all ranks, and every micro-batch loss is normalised by the global
denominator, so N processes compute the same update as one. The stages (rollout, update) are RLTrainer's; this
file holds the critic-free advantage and the step that wires them; the math lives in aha.algos and aha.rewards.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import algos
from .batching import build_batch
from .config import TrainConfig
from .dist import Dist
from .guard import SKIP_KEY, nonfinite
from .rl import RLTrainer, run


class OutcomeAdvantage:
    """A critic-free estimator (algorithm.advantage, with its std_scale) over the gathered rewards of all ranks;
    -> this rank's slice. For ReMax, `baseline` holds this rank's greedy-completion rewards, one per prompt."""

    def __init__(self, algorithm, group_size: int, dist: Dist):
        self.fn = algos.get_advantage(algorithm.advantage)
        self.std_scale, self.G, self.dist = algorithm.std_scale, group_size, dist

    def __call__(self, rewards: np.ndarray, baseline: np.ndarray | None = None):
        parts = self.dist.gather(rewards)
        kw = {"std_scale": self.std_scale}
        if baseline is not None:
            kw["baseline"] = torch.as_tensor(
                np.concatenate(self.dist.gather(baseline)), dtype=torch.float64
            )
        adv, metrics = self.fn(
            torch.as_tensor(np.concatenate(parts), dtype=torch.float64), self.G, **kw
        )
        start = sum(len(p) for p in parts[: self.dist.rank])
        # the group statistics are the trainer's (RLTrainer.group_metrics), one definition for every estimator
        skip = ("frac_reward_zero_std", "frac_reward_nan")
        return adv[start : start + len(rewards)].float(), {
            k: float(v) for k, v in dict(metrics).items() if k not in skip
        }


class GRPOTrainer(RLTrainer):
    name = "grpo"

    def __init__(self, cfg: TrainConfig, dist: Dist | None = None):
        super().__init__(cfg, dist)
        self.advantage = OutcomeAdvantage(cfg.algorithm, cfg.sampling.group_size, self.dist)

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        rb = self.rollout(step)
        metrics = rb.metrics
        if metrics["dynamic/groups"] == 0:  # no rank found an informative group: nothing to learn
            metrics["time/step"] = time.perf_counter() - t0
            return metrics
        baseline = None
        if self.cfg.algorithm.advantage == "remax":
            t1 = time.perf_counter()
            baseline = self.rollout.greedy_rewards(rb.ids, rb.rows)
            metrics["time/generate"] += time.perf_counter() - t1
        adv, adv_metrics = self.advantage(rb.rewards, baseline)
        self.release_engine()
        # e.g. a group's rewards summing past float64's range: skip the update (aha.train.guard)
        skip = nonfinite("advantages", adv, self.dist)
        if skip is None:
            batch = build_batch(
                rb.ids,
                rb.completions,
                adv,
                self.tok.pad_token_id,
                self.cfg.algorithm.mask_truncated,
                params=rb.params,
            )
            if rb.dummy:
                batch.loss_mask.zero_()
            metrics.update(self.update(batch))
        else:
            metrics[SKIP_KEY] = skip
        metrics.update(adv_metrics)
        metrics.update(self.group_metrics(self.gathered_rewards(rb)))
        metrics.update(self.rollout.metrics(rb))
        metrics["time/step"] = time.perf_counter() - t0
        metrics.update(self.memory_metrics())
        self.log_samples(step, rb)
        return metrics


def train(cfg: TrainConfig) -> dict:
    """`aha train CONFIG`: build, fit, close."""
    return run(GRPOTrainer(cfg))
