"""The policy update of GRPO (and PPO's policy half): mu passes of micro-batched gradient accumulation.

    L = agg_t[ -min(rho_t A, clip(rho_t, 1-e_low, 1+e_high) A) ] + beta * agg_t[KL(pi || pi_ref)] - c * agg_t[H]

Every micro-batch loss is normalised by the denominator of the whole global batch (tokens for token-mean,
sequences otherwise), so the accumulated gradient is exactly the full batch's whatever the split, on one
process or N. A mixin of the trainer: it uses cfg, dist, device, policy, ref, optimizer and scheduler.
"""

from __future__ import annotations

import time

import torch

from .. import algos
from .batching import micro_batches
from .forward import sequence_logprobs

SUMMED = (
    "loss",
    "kl",
    "entropy",
)  # normalised by the global denominator already: they add over micro-batches


class PolicyUpdate:
    def prompt_lens(self, mb):
        """The micro-batch's prompt lengths when the forward may compute each distinct prompt once."""
        return mb.prompt_lens if self.cfg.batch.share_prefix else None

    def logprobs_no_grad(self, model, batch, idx_lists):
        out = torch.zeros_like(batch.loss_mask)
        with torch.no_grad():
            for idx in idx_lists:
                mb = batch.select(idx).to(self.device)
                logp, _ = sequence_logprobs(
                    model,
                    mb.input_ids,
                    mb.attention_mask,
                    temperature=self.cfg.sampling.temperature,
                    prompt_lens=self.prompt_lens(mb),
                )
                out[idx, : logp.shape[1]] = logp.float().cpu()
        return out

    def update(self, batch) -> dict:
        cfg, a, dist = self.cfg, self.cfg.algorithm, self.dist
        mbs = micro_batches(batch, cfg.batch.micro_batch_size, cfg.batch.micro_batch_tokens)
        # Every rank runs the same number of forward/backward passes (FSDP's collectives); extra ones repeat a
        # micro-batch with zero weight.
        n_passes = dist.max_int(len(mbs))
        mbs = [(idx, 1.0) for idx in mbs] + [(mbs[-1], 0.0)] * (n_passes - len(mbs))
        # Normalise every micro-batch, on every rank, by the whole global batch's denominator: the gradients
        # then add up to exactly the full-batch gradient, whatever the split.
        denom = dist.sum(algos.agg_denominator(batch.loss_mask, a.agg).float())
        n_tokens = float(dist.sum(batch.loss_mask.sum()).clamp(min=1))
        policy_loss = algos.get_policy_loss(a.policy_loss)
        t0 = time.perf_counter()
        if self.ref is not None and batch.ref_logp is None:  # PPO may have computed them already
            with self.ref() as ref_model:
                batch.ref_logp = self.logprobs_no_grad(ref_model, batch, [i for i, _ in mbs])
        if a.mu > 1 and batch.old_logp is None:
            batch.old_logp = self.logprobs_no_grad(self.policy, batch, [i for i, _ in mbs])
        t1 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        grad_norm = torch.tensor(0.0)
        optim_seconds = 0.0
        for _ in range(a.mu):
            self.optimizer.zero_grad(set_to_none=True)
            for idx, weight in mbs:
                mb = batch.select(idx).to(self.device)
                share = (
                    weight * float(mb.loss_mask.sum()) / n_tokens
                )  # metrics are token means: weight by tokens
                logp, entropy = sequence_logprobs(
                    self.policy,
                    mb.input_ids,
                    mb.attention_mask,
                    temperature=cfg.sampling.temperature,
                    with_entropy=True,
                    prompt_lens=self.prompt_lens(mb),
                )
                old = mb.old_logp if mb.old_logp is not None else logp.detach()
                loss, m = policy_loss(
                    logp,
                    old,
                    mb.advantages,
                    mb.loss_mask,
                    clip_low=a.clip_low,
                    clip_high=a.clip_high,
                    clip_c=a.clip_c,
                    agg=a.agg,
                    norm_len=a.norm_len,
                    denom=denom,
                )
                m = dict(m)
                if mb.ref_logp is not None:
                    kl = algos.agg_loss(
                        algos.kl_estimate(logp, mb.ref_logp, kind=a.kl_kind),
                        mb.loss_mask,
                        a.agg,
                        a.norm_len,
                        denom=denom,
                    )
                    loss = loss + a.beta * kl
                    m["kl"] = kl.detach()
                ent = algos.agg_loss(entropy, mb.loss_mask, a.agg, a.norm_len, denom=denom)
                if a.entropy_coef:
                    loss = loss - a.entropy_coef * ent
                m["entropy"] = ent.detach()
                m["loss"] = loss.detach()
                m["logp_mismatch"] = algos.masked_mean(
                    (logp.detach() - mb.sampler_logp).abs(), mb.loss_mask
                )
                # FSDP averages gradients over ranks; the loss is already a global sum, so undo the average.
                (loss * (weight * dist.world)).backward()
                for k, v in m.items():
                    wk = weight if k in SUMMED else share
                    sums[k] = sums.get(k, 0.0) + wk * v.detach().float().cpu() / a.mu
            t_opt = self._sync_time()
            grad_norm = self.clip_gradients()
            self.optimizer.step()
            self.scheduler.step()
            optim_seconds += self._sync_time() - t_opt
        t2 = time.perf_counter()
        keys = sorted(sums)
        totals = dist.sum(torch.stack([torch.as_tensor(sums[k]) for k in keys])) if keys else []
        out = {k: float(v) for k, v in zip(keys, totals)}
        out.update(
            {
                "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0],
                "time/logprobs": t1 - t0,
                "time/update": t2 - t1,
                "time/optimizer": optim_seconds,
                "micro_batches": len(mbs),
            }
        )
        return out

    def _sync_time(self) -> float:
        """A timestamp after the GPU has caught up (for the time split only)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def clip_gradients(self) -> torch.Tensor:
        params = [p for p in self.policy.parameters() if p.grad is not None]
        max_norm = self.cfg.optim.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # DTensor under FSDP
