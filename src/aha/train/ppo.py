"""PPO with a learned value model (classic RLHF PPO: Ziegler et al. 2019, Ouyang et al. 2022) on the GRPO loop.

GRPO is PPO without the critic: it replaces V(s) by the mean reward of the prompt's group. This trainer puts
the critic back and changes nothing else (rollout, rewards, micro-batching, logging, checkpoints are GRPO's).
For a completion o with sequence reward R (the weighted reward sum; a NaN "no reward applies" counts as 0):

    r_t = [t = last token] * R  -  c * k1_t,     k1_t = log pi_old(o_t) - log pi_ref(o_t)   (c = 0: no KL term)
    V_t = critic(prompt + o_<=t)                 (aha.models.value, evaluated once, before the update)
    delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = sum_k (gamma lam)^k delta_{t+k},   Ret_t = A_t + V_t   (GAE)
    A is whitened over the batch's valid tokens (optional); then, for mu epochs, on the same micro-batches:
    policy: GRPO's PPO-clip loss with token advantages A_t (plus beta * KL in the loss, if beta > 0)
    critic: 0.5 * max((V - Ret)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - Ret)^2), token mean, own AdamW
    c: fixed, or adaptive towards kl_target (Ziegler et al. sec. 2.2) on the batch's mean per-sequence sum of k1.

Departures, and why: the critic is a separate network (no trunk shared with the policy), so a vf_coef would only
rescale its gradient before Adam's normalisation: there is none. The critic shares the policy's schedule, grad-norm
clip and epochs; its learning rate can differ (value_lr). Under torchrun the critic is sharded like the policy and
every statistic that feeds the update (whitening, KL controller, loss normaliser) is taken over all ranks.
PPO-only knobs are read from cfg.algorithm when the config has them (see PPOSettings), else the defaults below.
The math lives in aha.algos (token_level_rewards, kl, gae, value_loss); this file only wires it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import algos
from ..config import ConfigError, check
from ..models.load import load_model, reference_model
from ..models.value import ValueModel
from . import checkpoint as ckpt
from .batching import Batch, micro_batches
from .config import TrainConfig
from .dist import Dist
from .forward import LogprobModel
from .grpo import GRPOTrainer
from .optim import build_optimizer, build_scheduler

KL_CTRLS = ("fixed", "adaptive")


@dataclass
class PPOSettings:
    """PPO-only knobs; each is read from cfg.algorithm.<name> when that field exists."""

    gamma: float = 1.0  # discount; 1 = undiscounted episodes (one completion)
    lam: float = 1.0  # GAE lambda: 1 = Monte Carlo returns minus V, 0 = one-step TD; 0.95 (classic RLHF) failed on the demo task
    whiten_advantages: bool = True
    value_clip: float | None = 0.2  # eps_v of the clipped value loss; None = plain squared error
    value_lr: float | None = None  # critic learning rate; None = optim.lr
    value_model_path: str | None = None  # critic initialisation; None = the policy's model.path
    reward_kl_coef: float = (
        0.0  # c: k1 KL to the reference in the reward; 0 = off (no reference loaded)
    )
    kl_ctrl: str = "fixed"  # fixed | adaptive (needs kl_target)
    kl_target: float | None = None  # adaptive: target mean per-sequence KL (sum of k1 over tokens)
    kl_horizon: float = 10000.0  # adaptive: controller horizon, in samples

    def __post_init__(self):
        check(0 <= self.gamma <= 1, "algorithm.gamma", f"must be in [0, 1], got {self.gamma}")
        check(0 <= self.lam <= 1, "algorithm.lam", f"must be in [0, 1], got {self.lam}")
        check(
            self.value_clip is None or self.value_clip > 0,
            "algorithm.value_clip",
            f"must be > 0 (e.g. 0.2) or null for no clip, got {self.value_clip}",
        )
        check(
            self.value_lr is None or self.value_lr > 0,
            "algorithm.value_lr",
            f"must be > 0, got {self.value_lr}",
        )
        check(
            self.reward_kl_coef >= 0,
            "algorithm.reward_kl_coef",
            f"must be >= 0, got {self.reward_kl_coef}",
        )
        check(
            self.kl_ctrl in KL_CTRLS,
            "algorithm.kl_ctrl",
            f"unknown {self.kl_ctrl!r}; choose one of: fixed, adaptive",
        )
        if self.kl_ctrl == "adaptive":
            check(
                self.kl_target is not None and self.kl_target > 0 and self.reward_kl_coef > 0,
                "algorithm.kl_target",
                "kl_ctrl=adaptive needs kl_target > 0 and a starting reward_kl_coef > 0 (e.g. 0.05)",
            )
        check(self.kl_horizon > 0, "algorithm.kl_horizon", f"must be > 0, got {self.kl_horizon}")

    @classmethod
    def from_config(cls, algorithm) -> PPOSettings:
        return cls(
            **{
                f.name: getattr(algorithm, f.name)
                for f in fields(cls)
                if hasattr(algorithm, f.name)
            }
        )


@dataclass
class PPOBatch(Batch):
    """A Batch whose `advantages` are per token (B, L-1), plus the critic's rollout values and GAE returns."""

    old_values: Tensor | None = None  # (B, L-1) V_t before the update, 0 off the completion
    returns: Tensor | None = None  # (B, L-1) Ret_t, the critic's regression target

    @classmethod
    def extend(cls, batch: Batch, **kw) -> PPOBatch:
        return cls(**{**{f: getattr(batch, f) for f in Batch.__dataclass_fields__}, **kw})

    def select(self, idx: list[int]) -> PPOBatch:
        base = Batch.select(self, idx)  # rows idx, padding columns no selected row uses cut off
        t, T = torch.tensor(idx, dtype=torch.long), base.loss_mask.shape[1]
        cut = lambda x: x[t][:, :T]  # the same cut for the per-token fields Batch does not know
        return PPOBatch.extend(
            base,
            advantages=cut(self.advantages),
            old_values=cut(self.old_values),
            returns=cut(self.returns),
        )

    def to(self, device) -> PPOBatch:
        return PPOBatch(
            **{
                f: None if (x := getattr(self, f)) is None else x.to(device)
                for f in self.__dataclass_fields__
            }
        )


class PPOTrainer(GRPOTrainer):
    name = "ppo"

    def __init__(
        self, cfg: TrainConfig, settings: PPOSettings | None = None, dist: Dist | None = None
    ):
        if cfg.algorithm.advantage != "gae":
            raise ConfigError(
                "algorithm.advantage",
                f"PPO computes advantages with its value model (GAE), got "
                f"{cfg.algorithm.advantage!r}; set algorithm.advantage=gae (or use algorithm.name=grpo)",
            )
        s = self.settings = settings or PPOSettings.from_config(cfg.algorithm)
        super().__init__(cfg, dist)
        m, o = cfg.model, cfg.optim
        self.value = ValueModel.from_pretrained(
            s.value_model_path or m.path,
            device=str(self.device),
            dtype=m.dtype,
            seed=cfg.seed,
            gradient_checkpointing=m.gradient_checkpointing,
            trust_remote_code=m.trust_remote_code,
        )
        self.dist.shard(self.value)  # before the optimizer: FSDP2 swaps in sharded parameters
        self.value_optimizer = build_optimizer(
            self.value, s.value_lr or o.lr, o.weight_decay, o.betas, o.eps
        )
        self.value_scheduler = build_scheduler(
            self.value_optimizer,
            total=cfg.steps * cfg.algorithm.mu,
            warmup=o.warmup_steps,
            schedule=o.schedule,
            min_ratio=o.min_lr_ratio,
        )
        self.kl_ctl = algos.kl_controller(
            s.kl_ctrl, s.reward_kl_coef, target=s.kl_target, horizon=s.kl_horizon
        )
        self.kl_ref = self.reward_reference() if s.reward_kl_coef > 0 else None

    def reward_reference(self):
        """The frozen initial policy for the reward's KL: GRPO's reference when it has one (beta > 0), else built
        as GRPO builds it (adapters off under LoRA, else a copy) -- loaded afresh under torchrun, where the policy
        is already sharded and cannot be deep-copied -- and sharded like the policy's training forward."""
        if self.ref is not None:
            return self.ref
        if not self.dist.enabled:
            return reference_model(self.model)
        m = self.cfg.model
        lm, _ = load_model(
            m.path,
            device=str(self.device),
            dtype=m.dtype,
            seed=self.cfg.seed,
            trust_remote_code=m.trust_remote_code,
        )
        ref = self.dist.shard(LogprobModel(lm.eval().requires_grad_(False)))
        return lambda: contextlib.nullcontext(ref)

    # ---- advantages: the critic runs inside update(), so the rewards travel there in the batch ------------------
    def advantages(self, total: np.ndarray, baseline: np.ndarray | None = None):
        """-> this rank's sequence rewards (N,) in the batch's `advantages` slot; `gae_batch` replaces them."""
        return torch.as_tensor(total, dtype=torch.float32), {}

    def passes(self, batch: Batch) -> list[tuple[list[int], float]]:
        """GRPO's micro-batches, as many on every rank (FSDP's collectives); the extra ones carry weight 0."""
        mbs = micro_batches(
            batch, self.cfg.batch.micro_batch_size, self.cfg.batch.micro_batch_tokens
        )
        return [(idx, 1.0) for idx in mbs] + [(mbs[-1], 0.0)] * (
            self.dist.max_int(len(mbs)) - len(mbs)
        )

    def values_no_grad(self, batch: Batch, passes) -> Tensor:
        out = torch.zeros_like(batch.loss_mask)  # (B, L-1)
        with torch.no_grad():
            for idx, _ in passes:
                mb = batch.select(idx).to(self.device)
                v = self.value(mb.input_ids, mb.attention_mask)[
                    :, :-1
                ]  # V of the state before target t
                out[idx, : v.shape[1]] = v.float().cpu()
        return out

    def whiten(self, x: Tensor, mask: Tensor) -> Tensor:
        """algos.masked_whiten with mean and unbiased variance over the valid tokens of all ranks."""
        m, d = mask.bool(), self.dist
        n = d.sum(m.sum().double())
        mean = d.sum(algos.masked_sum(x.double(), m)) / n.clamp(min=1)
        var = d.sum(algos.masked_sum((x.double() - mean) ** 2, m)) / (n - 1).clamp(min=1)
        return torch.where(m, ((x - mean) * torch.rsqrt(var + 1e-8)).to(x.dtype), 0.0)

    def gae_batch(self, batch: Batch, passes) -> tuple[PPOBatch, dict]:
        """batch.advantages (B,) holds sequence rewards -> PPOBatch with GAE token advantages, values, returns."""
        s, mask, d = self.settings, batch.loss_mask.bool(), self.dist
        values = torch.where(
            mask, self.values_no_grad(batch, passes), 0.0
        )  # (B, L-1), 0 off the completion
        k1, metrics = None, {}
        if self.kl_ref is not None:
            idx_lists = [i for i, _ in passes]
            logp = self.logprobs_no_grad(self.policy, batch, idx_lists)
            with self.kl_ref() as ref_model:
                batch.ref_logp = self.logprobs_no_grad(
                    ref_model, batch, idx_lists
                )  # GRPO's update logs its KL
            if self.cfg.algorithm.mu > 1:
                batch.old_logp = logp
            k1 = torch.where(
                mask, algos.kl_estimate(logp, batch.ref_logp, kind="k1"), 0.0
            )  # (B, L-1)
            seqs = d.sum(torch.tensor(float(mask.any(1).sum())))
            metrics = {
                "kl_coef": self.kl_ctl.value,
                "kl_reward": float(d.sum(k1.sum()) / seqs.clamp(min=1)),
            }
        rewards = algos.token_level_rewards(
            batch.advantages, mask, kl=k1, kl_coef=self.kl_ctl.value
        )
        adv, returns = algos.gae(rewards, values, mask, gamma=s.gamma, lam=s.lam)
        if s.whiten_advantages:
            adv = self.whiten(adv, mask)
        # How well the critic predicted these returns before it is trained on them (1 = perfectly, 0 = no better
        # than a constant): the standard critic health metric (this rank's tokens under torchrun).
        _, vm = algos.value_loss(values, values, returns, mask, clip=None)
        metrics.update(
            {
                "value/explained_variance": float(vm["explained_variance"]),
                "value/mean": float(vm["value_mean"]),
                "value/return_mean": float(vm["return_mean"]),
            }
        )
        if k1 is not None:  # after this batch's rewards used the current coefficient
            self.kl_ctl.update(metrics["kl_reward"], n_steps=int(seqs))
        return PPOBatch.extend(batch, advantages=adv, old_values=values, returns=returns), metrics

    # ---- update: critic values -> token rewards -> GAE -> policy (GRPO's loss) -> critic ---------------------
    def update(self, batch: Batch) -> dict:
        passes = self.passes(batch)
        t0 = time.perf_counter()
        ppo_batch, metrics = self.gae_batch(batch, passes)
        metrics["time/values"] = time.perf_counter() - t0
        metrics.update(super().update(ppo_batch))  # the policy: PPO-clip on token advantages
        metrics.update(self.update_value(ppo_batch, passes))
        return metrics

    def update_value(self, batch: PPOBatch, passes) -> dict:
        cfg, a, s, d = self.cfg, self.cfg.algorithm, self.settings, self.dist
        denom = d.sum(
            algos.agg_denominator(batch.loss_mask, "token-mean").float()
        )  # global: passes sum to it
        n_tokens = float(d.sum(batch.loss_mask.sum()).clamp(min=1))
        sums = torch.zeros(2)  # value loss, clip fraction (token mean)
        grad_norm = torch.tensor(0.0)
        t0 = time.perf_counter()
        for _ in range(a.mu):
            self.value_optimizer.zero_grad(set_to_none=True)
            for idx, weight in passes:
                mb = batch.select(idx).to(self.device)
                v = self.value(mb.input_ids, mb.attention_mask)[:, :-1]  # (b, l-1)
                loss, m = algos.value_loss(
                    v,
                    mb.old_values,
                    mb.returns,
                    mb.loss_mask,
                    clip=s.value_clip,
                    agg="token-mean",
                    denom=denom,
                )
                (
                    loss * (weight * d.world)
                ).backward()  # FSDP averages over ranks; the loss is a global sum
                share = weight * float(mb.loss_mask.sum()) / n_tokens
                sums += (
                    torch.stack(
                        [
                            weight * loss.detach().float().cpu(),
                            share * m["value_clip_frac"].float().cpu(),
                        ]
                    )
                    / a.mu
                )
            params = [p for p in self.value.parameters() if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(
                params, cfg.optim.max_grad_norm or float("inf")
            )
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            self.value_optimizer.step()
            self.value_scheduler.step()
        loss, clip_frac = d.sum(sums).tolist()
        return {
            "value/loss": loss,
            "value/clip_frac": clip_frac,
            "value/grad_norm": float(grad_norm),
            "value/lr": self.value_scheduler.get_last_lr()[0],
            "time/value_update": time.perf_counter() - t0,
        }

    # ---- checkpoints: the policy as in GRPO, the critic (+ its AdamW, schedule) in step-N/value/ ----------------
    def extra_state(self) -> dict:
        return {"kl_coef": self.kl_ctl.value}

    def load_extra_state(self, state: dict) -> None:
        self.kl_ctl.value = state["kl_coef"]

    def save_parts(self, tmp: Path) -> None:  # inside the policy checkpoint's atomic rename
        save_value_state(
            tmp / "value", self.value, self.value_optimizer, self.value_scheduler, self.dist
        )

    def maybe_resume(self) -> None:
        last = ckpt.latest_checkpoint(self.out) if self.cfg.resume else None
        if last is not None and not (last / "value" / "trainer_state.pt").is_file():
            raise RuntimeError(
                f"checkpoint {last} has no value model (value/): it was written by GRPO; "
                "resume PPO from a PPO run's directory"
            )
        super().maybe_resume()
        if last is not None:
            load_value_state(last / "value", self.value, self.value_optimizer, self.value_scheduler)


def save_value_state(target: Path, value: ValueModel, optimizer, scheduler, dist: Dist) -> None:
    """target/: the critic in HF layout (AutoModel + value_head.safetensors), state/ (weights + AdamW, sharded by
    torch.distributed.checkpoint as the policy's), trainer_state.pt (schedule). Written to target.tmp, then
    renamed: target/ exists only once complete. Collective under torchrun."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
    )

    tmp = target.with_name(target.name + ".tmp")
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    full = (
        get_model_state_dict(
            value, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if dist.enabled
        else None
    )
    if dist.is_main:
        value.save_pretrained(tmp, state_dict=full)
    model_sd, optim_sd = get_state_dict(value, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "state"))
    if dist.is_main:
        torch.save({"scheduler": scheduler.state_dict()}, tmp / "trainer_state.pt")
        os.replace(tmp, target)
    dist.barrier()


def load_value_state(source: Path, value: ValueModel, optimizer, scheduler) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(value, optimizer)
    dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(source / "state"))
    set_state_dict(value, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    scheduler.load_state_dict(
        torch.load(source / "trainer_state.pt", weights_only=True)["scheduler"]
    )


def train(cfg: TrainConfig, settings: PPOSettings | None = None) -> dict:
    """`aha train CONFIG algorithm.name=ppo`: build, fit, close."""
    trainer = PPOTrainer(cfg, settings)
    try:
        return trainer.fit()
    finally:
        trainer.close()
        trainer.dist.close()
