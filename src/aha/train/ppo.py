"""PPO with a learned value model (classic RLHF PPO: Ziegler et al. 2019, Ouyang et al. 2022).

GRPO is PPO without the critic: it replaces V(s) by the mean reward of the prompt's group. This trainer uses the
same stages as GRPO's (rollout, rewards, micro-batching, the policy update, logging, checkpoints: RLTrainer) and
puts the critic in place of the group baseline (train/critic.py). For a completion o with sequence reward R (the
weighted reward sum; a NaN "no reward applies" counts as 0):

    r_t = [t = last token] * R  -  c * k1_t,     k1_t = log pi_old(o_t) - log pi_ref(o_t)   (c = 0: no KL term)
    V_t = critic(prompt + o_<=t)                 (aha.models.value, evaluated once, before the update)
    delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = sum_k (gamma lam)^k delta_{t+k},   Ret_t = A_t + V_t   (GAE)
    A is whitened over the batch's valid tokens (optional); then, for mu epochs, on the same micro-batches:
    policy: the PPO-clip loss with token advantages A_t (plus beta * KL in the loss, if beta > 0)
    critic: 0.5 * max((V - Ret)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - Ret)^2), token mean, own AdamW
    c: fixed, or adaptive towards kl_target (Ziegler et al. sec. 2.2) on the batch's mean per-sequence sum of k1.

Departures, and why: the critic is a separate network (no trunk shared with the policy), so a vf_coef would only
rescale its gradient before Adam's normalisation: there is none. The critic shares the policy's schedule,
grad-norm clip and epochs; its learning rate can differ (algorithm.value_lr). Under torchrun the critic is sharded
like the policy and every statistic that feeds the update (whitening, KL controller, loss normaliser) is taken
over all ranks. The PPO knobs are the algorithm section's (aha.train.algorithm).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .batching import build_batch
from .config import TrainConfig
from .critic import Critic
from .dist import Dist
from .guard import SKIP_KEY, nonfinite
from .rl import RLTrainer, run
from .update import equal_passes


class PPOTrainer(RLTrainer):
    name = "ppo"

    def __init__(self, cfg: TrainConfig, dist: Dist | None = None):
        super().__init__(cfg, dist)
        self.critic = Critic(
            cfg, dist=self.dist, device=self.device, policy_model=self.model, reference=self.ref
        )

    def train_step(self, step: int) -> dict:
        """rollout -> critic values, token rewards, GAE -> critic update -> policy update (PPO-clip)."""
        t0 = time.perf_counter()
        rb = self.rollout(step)
        metrics = rb.metrics
        if metrics["dynamic/groups"] == 0:  # no rank found an informative group: nothing to learn
            metrics["time/step"] = time.perf_counter() - t0
            return metrics
        self.release_engine()
        batch = build_batch(
            rb.ids,
            rb.completions,
            None,  # the critic sets token advantages
            self.tok.pad_token_id,
            self.cfg.algorithm.mask_truncated,
            params=rb.params,
        )
        if rb.dummy:
            batch.loss_mask.zero_()
        passes = equal_passes(batch, self.cfg.batch, self.dist)
        t1 = time.perf_counter()
        rewards = torch.as_tensor(rb.rewards, dtype=torch.float32)
        ppo_batch, critic_metrics = self.critic.advantages(batch, rewards, passes, self.update)
        metrics["time/values"] = time.perf_counter() - t1
        metrics.update(critic_metrics)
        # The non-finite guard (train/guard.py): no update on non-finite advantages or returns; the critic goes
        # first (both read only the batch), so the huge returns of huge rewards skip the whole step.
        skip = nonfinite("advantages", ppo_batch.advantages, self.dist) or nonfinite(
            "returns", ppo_batch.returns, self.dist
        )
        if skip is not None:
            metrics[SKIP_KEY] = skip
        else:
            metrics.update(self.critic.update(ppo_batch, passes))
            if SKIP_KEY not in metrics:
                metrics.update(self.update(ppo_batch, passes))
                if SKIP_KEY in metrics:
                    metrics[SKIP_KEY] += " (the value model's update was taken)"
        metrics.update(self.group_metrics(self.gathered_rewards(rb)))
        metrics.update(self.rollout.metrics(rb))
        metrics["time/step"] = time.perf_counter() - t0
        metrics.update(self.memory_metrics())
        self.log_samples(step, rb)
        return metrics

    # ---- checkpoints: the policy as in GRPO, the critic (+ its AdamW, schedule) in step-N/value/ ----------
    def extra_state(self) -> dict:
        return {"kl_coef": self.critic.kl_ctl.value}

    def load_extra_state(self, state: dict) -> None:
        self.critic.kl_ctl.value = state["kl_coef"]

    def save_parts(self, tmp: Path) -> None:  # inside the policy checkpoint's atomic rename
        self.critic.save_state(tmp / "value")

    def maybe_resume(self) -> None:
        last = ckpt.latest_checkpoint(self.out) if self.cfg.resume else None
        if last is not None and not (last / "value" / "trainer_state.pt").is_file():
            raise RuntimeError(
                f"checkpoint {last} has no value model (value/): it was written by GRPO; "
                "resume PPO from a PPO run's directory"
            )
        super().maybe_resume()
        if last is not None:
            self.critic.load_state(last / "value")


def train(cfg: TrainConfig) -> dict:
    """`aha train CONFIG algorithm.name=ppo`: build, fit, close."""
    return run(PPOTrainer(cfg))
