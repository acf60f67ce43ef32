"""PPO's critic stage: a value model turns sequence rewards into token advantages, and learns from the returns.

    advantages(batch, rewards, passes, update) -> PPOBatch: values V_t (before any update), k1 KL to the
        reference in the reward (c > 0), r_t = [t = last] * R - c * k1_t, GAE advantages and returns, whitened
        over all ranks' valid tokens (optional)
    update(ppo_batch, passes) -> metrics: mu epochs of the clipped value loss, token mean, its own AdamW
The math lives in aha.algos (token_level_rewards, kl, gae, value_loss). The critic's weights and AdamW state are
checkpointed in step-N/value/ (save_state / load_state), sharded like the policy's under torchrun.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .. import algos
from ..models.value import ValueModel
from .batching import Batch
from .dist import Dist
from .forward import LogprobModel
from .guard import SKIP_KEY
from .update import clip_and_step, optimizer_for


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


class Critic:
    def __init__(self, cfg, *, dist: Dist, device, policy_model, reference):
        """cfg: the TrainConfig (its algorithm section holds the PPO knobs); policy_model: the HF policy, the
        reward KL's reference when `reference` (the policy update's, beta > 0) is None."""
        self.cfg, self.dist, self.device = cfg, dist, device
        a, m = cfg.algorithm, cfg.model
        self.value_clip = a.value_clip
        self.value = ValueModel.from_pretrained(
            a.value_model_path or m.path,
            device=str(device),
            dtype=m.dtype,
            seed=cfg.seed,
            gradient_checkpointing=m.gradient_checkpointing,
            trust_remote_code=m.trust_remote_code,
        )
        dist.shard(self.value)  # before the optimizer: FSDP2 swaps in sharded parameters
        # plain AdamW whatever optim.name says: the memory plan counts the critic's state so (train/memory.py)
        self.optimizer, self.scheduler = optimizer_for(
            self.value, cfg.optim, cfg.steps * a.mu, lr=a.value_lr, name="adamw"
        )
        self.kl_ctl = algos.kl_controller(
            a.kl_ctrl, a.reward_kl_coef, target=a.kl_target, horizon=a.kl_horizon
        )
        self.kl_ref = None
        if a.reward_kl_coef > 0:
            self.kl_ref = reference or self.reward_reference(policy_model)

    def reward_reference(self, policy_model):
        """The frozen initial policy for the reward's KL, built as the policy update builds its reference
        (adapters off under LoRA, else a copy) -- loaded afresh under torchrun, where the policy is already
        sharded and cannot be deep-copied -- and sharded like the policy's training forward."""
        from ..models.load import reference_model

        if not self.dist.enabled:
            return reference_model(policy_model)
        lm, _ = self.cfg.model.load(seed=self.cfg.seed, device=str(self.device))
        ref = self.dist.shard(LogprobModel(lm.eval().requires_grad_(False)))
        return lambda: contextlib.nullcontext(ref)

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

    def advantages(self, batch: Batch, rewards: Tensor, passes, update) -> tuple[PPOBatch, dict]:
        """rewards (B,) per sequence (NaN: none applies, counts 0) -> PPOBatch with GAE token advantages,
        values and returns. `update` (the PolicyUpdate) computes the policy's and reference's logprobs."""
        a, mask, d = self.cfg.algorithm, batch.loss_mask.bool(), self.dist
        values = torch.where(mask, self.values_no_grad(batch, passes), 0.0)  # (B, L-1)
        k1, metrics = None, {}
        if self.kl_ref is not None:
            idx_lists = [i for i, _ in passes]
            logp = update.logprobs_no_grad(update.policy, batch, idx_lists)
            with self.kl_ref() as ref_model:  # the policy update logs its KL with these
                batch.ref_logp = update.logprobs_no_grad(ref_model, batch, idx_lists)
            if a.mu > 1:
                batch.old_logp = logp
            k1 = torch.where(
                mask, algos.kl_estimate(logp, batch.ref_logp, kind="k1"), 0.0
            )  # (B, L-1)
            seqs = d.sum(torch.tensor(float(mask.any(1).sum())))
            metrics = {
                "kl_coef": self.kl_ctl.value,
                "kl_reward": float(d.sum(k1.sum()) / seqs.clamp(min=1)),
            }
        token_rewards = algos.token_level_rewards(rewards, mask, kl=k1, kl_coef=self.kl_ctl.value)
        adv, returns = algos.gae(token_rewards, values, mask, gamma=a.gamma, lam=a.lam)
        if a.whiten_advantages:
            adv = self.whiten(adv, mask)
        # How well the critic predicted these returns before it is trained on them (1 = perfectly, 0 = no
        # better than a constant): the standard critic health metric (this rank's tokens under torchrun).
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

    def update(self, batch: PPOBatch, passes) -> dict:
        """mu epochs of the clipped value loss on the passes the policy used; -> value/* metrics."""
        a, d = self.cfg.algorithm, self.dist
        # normalised by the global token count: the passes' losses add up to the full batch's
        denom = d.sum(algos.agg_denominator(batch.loss_mask, "token-mean").float())
        n_tokens = float(d.sum(batch.loss_mask.sum()).clamp(min=1))
        # value loss, clip fraction (token mean), added up on the device and read once (as the policy's update)
        sums = torch.zeros(2, device=self.device)
        grad_norm, stepped = torch.tensor(0.0), True
        t0 = time.perf_counter()
        for _ in range(a.mu):
            self.optimizer.zero_grad(set_to_none=True)
            for idx, weight in passes:
                sel = batch.select(idx)
                share = weight * float(sel.loss_mask.sum()) / n_tokens  # on the CPU batch: no sync
                mb = sel.to(self.device)
                v = self.value(mb.input_ids, mb.attention_mask)[:, :-1]  # (b, l-1)
                loss, m = algos.value_loss(
                    v,
                    mb.old_values,
                    mb.returns,
                    mb.loss_mask,
                    clip=self.value_clip,
                    agg="token-mean",
                    denom=denom,
                )
                (
                    loss * (weight * d.world)
                ).backward()  # FSDP averages over ranks; loss is a global sum
                clip_frac = share * m["value_clip_frac"].float()
                sums += torch.stack([weight * loss.detach().float(), clip_frac]) / a.mu
            # the rate this step takes (clip_and_step then advances it)
            lr = self.scheduler.get_last_lr()[0]
            grad_norm, stepped = clip_and_step(
                self.value,
                self.optimizer,
                self.scheduler,
                self.cfg.optim.max_grad_norm,
                ok=bool(torch.isfinite(sums[0])),
                dist=d,
            )
            if not stepped:  # no step on a non-finite loss or gradient (train/guard.py)
                break
        loss, clip_frac = d.sum(sums).tolist()
        out = {
            "value/loss": loss,
            "value/clip_frac": clip_frac,
            "value/grad_norm": float(grad_norm),
            "value/lr": lr,
            "time/value_update": time.perf_counter() - t0,
        }
        if not stepped:
            out[SKIP_KEY] = "non-finite loss or gradient norm in the value model's update"
        return out

    # ---- checkpoints: step-N/value/ -------------------------------------------------------------------------
    def save_state(self, target: Path) -> None:
        """target/: the critic in HF layout (AutoModel + value_head.safetensors), state/ (weights + AdamW,
        sharded by torch.distributed.checkpoint as the policy's), trainer_state.pt (schedule). Written to
        target.tmp, then renamed: target/ exists only once complete. Collective under torchrun."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_state_dict,
        )

        from .checkpoint import quiet_single_process

        dist, tmp = self.dist, target.with_name(target.name + ".tmp")
        if dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        full = None
        if dist.enabled:
            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full = get_model_state_dict(self.value, options=opts)
        if dist.is_main:
            self.value.save_pretrained(tmp, state_dict=full)
        model_sd, optim_sd = get_state_dict(self.value, self.optimizer)
        with quiet_single_process():
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "state"))
        if dist.is_main:
            torch.save({"scheduler": self.scheduler.state_dict()}, tmp / "trainer_state.pt")
            os.replace(tmp, target)
        dist.barrier()

    def load_state(self, source: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        from .checkpoint import quiet_single_process

        model_sd, optim_sd = get_state_dict(self.value, self.optimizer)
        with quiet_single_process():
            dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(source / "state"))
        set_state_dict(
            self.value, self.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd
        )
        state = torch.load(source / "trainer_state.pt", weights_only=True)
        self.scheduler.load_state_dict(state["scheduler"])
