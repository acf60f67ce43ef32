"""The policy update (GRPO's, and PPO's policy half): mu passes of micro-batched gradient accumulation.

    L = agg_t[ -min(rho_t A, clip(rho_t, 1-e_low, 1+e_high) A) ] + beta * agg_t[KL(pi || pi_ref)] - c * agg_t[H]

Every micro-batch loss is normalised by the denominator of the whole global batch (tokens for token-mean,
sequences otherwise), so the accumulated gradient is exactly the full batch's whatever the split, on one
process or N. Logprobs are taken at the temperature the batch was sampled with (Batch.params), the one at which
the engine reported its own. Also here, for every trainer: `optimizer_for` (AdamW + schedule from an OptimConfig)
and `clip_and_step` (clip the gradient norm, step, advance the schedule; no step on a non-finite loss or norm).
"""

from __future__ import annotations

import math
import time
import weakref

import torch

from .. import algos
from ..models.load import unwrap
from .batching import micro_batches
from .forward import right_padded, sequence_logprobs
from .guard import SKIP_KEY
from .optim import build_optimizer, build_scheduler

SUMMED = ("loss", "kl", "entropy")  # normalised by the global denominator already: they add up


def optimizer_for(
    module, optim, total_steps: int, lr: float | None = None, name: str | None = None
):
    """-> (the optimizer over module's trainable parameters, its LR schedule) as OptimConfig `optim` says;
    lr and name (adamw, adamw_8bit, ...) override optim's."""
    opt = build_optimizer(
        module, lr or optim.lr, optim.weight_decay, optim.betas, optim.eps, name=name or optim.name
    )
    sched = build_scheduler(
        opt,
        total=total_steps,
        warmup=optim.warmup_steps,
        schedule=optim.schedule,
        min_ratio=optim.min_lr_ratio,
    )
    return opt, sched


def clip_and_step(
    module, optimizer, scheduler=None, max_norm: float = 0.0, *, ok: bool = True, dist=None
) -> tuple[torch.Tensor, bool]:
    """Clip the gradient norm of `module` to max_norm (0 = no clipping, the norm is still measured), take the
    optimizer step, drop the gradients (set to None: their memory is free until the next backward) and advance
    the schedule; -> (the norm before clipping (a full tensor under FSDP), stepped).

    The step is skipped (aha.train.guard) when the norm is not finite or `ok` is False (the caller's loss was
    not finite) on any rank of `dist`: the gradients are dropped and the weights, the optimizer's state and the
    schedule stay as they were, as they would after a NaN step, once AdamW had made every weight NaN."""
    params = [p for p in module.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm or float("inf"))
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # DTensor under FSDP
    bad = int(not (ok and bool(torch.isfinite(norm))))
    if dist.max_int(bad) if dist is not None else bad:
        optimizer.zero_grad(set_to_none=True)
        return norm, False
    optimizer.step()
    # The gradients are spent: free them now rather than at the next update's zero_grad, so that they do not
    # sit in GPU memory through the next rollout (P_t x their element size: 3 GiB for a 1.5B model in bf16).
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return norm, True


def equal_passes(batch, batch_cfg, dist) -> list[tuple[list[int], float]]:
    """The batch's micro-batches as (row indices, weight), as many on every rank (FSDP's collectives need the
    same number of forward/backward passes): the extra ones repeat a micro-batch with weight 0."""
    mbs = micro_batches(batch, batch_cfg.micro_batch_size, batch_cfg.micro_batch_tokens)
    return [(idx, 1.0) for idx in mbs] + [(mbs[-1], 0.0)] * (dist.max_int(len(mbs)) - len(mbs))


class PolicyUpdate:
    """One policy update per step. Holds the training forward (`policy`), the reference (None when beta = 0),
    the optimizer and schedule, and the algorithm / batch / optim sections of the config."""

    def __init__(self, cfg, *, dist, device, policy, ref, optimizer, scheduler):
        self.cfg, self.dist, self.device = cfg, dist, device
        self.policy, self.ref, self.optimizer, self.scheduler = policy, ref, optimizer, scheduler
        self._ids_checked = None  # a weak reference to the last batch's ids that passed check_ids

    def prompt_lens(self, mb):
        """The micro-batch's prompt lengths when the forward may compute each distinct prompt once."""
        return mb.prompt_lens if self.cfg.batch.share_prefix else None

    def check_ids(self, batch) -> None:
        """Every token id of the (CPU) batch is in the vocabulary: checked once here, so the forwards need no
        host sync for it."""
        ids = batch.input_ids
        if self._ids_checked is not None and self._ids_checked() is ids:
            return  # the same ids were checked for the no-grad passes (beta > 0, PPO) just before
        vocab = unwrap(self.policy).get_output_embeddings().weight.shape[0]
        low, top = (int(ids.min()), int(ids.max())) if ids.numel() else (0, 0)
        bad = low < 0 or top >= vocab
        # every rank raises, or none: a lone rank's error would leave the others waiting in a collective
        if self.dist.max_int(int(bad)):
            got = f"got {low}..{top}" if bad else "another process's batch has one outside"
            raise ValueError(
                f"token ids of the update batch must be in [0, {vocab}) (the model's vocabulary), "
                f"{got}; check the tokenizer against the model"
            )
        self._ids_checked = weakref.ref(ids)

    def logprobs_no_grad(self, model, batch, idx_lists) -> torch.Tensor:
        """(B, L-1) logprobs of `model` (the policy, a reference) at the batch's sampling temperature."""
        self.check_ids(batch)
        out, parts = torch.zeros_like(batch.loss_mask), []
        with torch.no_grad():
            for idx in idx_lists:
                sel = batch.select(idx)
                mb = sel.to(self.device)
                logp, _ = sequence_logprobs(
                    model,
                    mb.input_ids,
                    mb.attention_mask,
                    temperature=batch.logprob_temperature,
                    prompt_lens=self.prompt_lens(mb),
                    padded_right=right_padded(sel.attention_mask),
                    ids_checked=True,
                )
                parts.append((idx, logp.float()))
        if parts:  # read back in one copy, once the GPU is done with all of them
            flat = torch.cat([logp.reshape(-1) for _, logp in parts]).cpu()
            for (idx, logp), host in zip(parts, flat.split([lp.numel() for _, lp in parts])):
                out[idx, : logp.shape[1]] = host.view(logp.shape)
        return out

    def __call__(self, batch, passes=None) -> dict:
        """Update the policy on `batch` (advantages set; ref_logp / old_logp filled here unless given)."""
        a, dist = self.cfg.algorithm, self.dist
        self.check_ids(batch)
        mbs = passes or equal_passes(batch, self.cfg.batch, dist)
        # Normalise every micro-batch, on every rank, by the whole global batch's denominator: the gradients
        # then add up to exactly the full-batch gradient, whatever the split.
        # on the device once: a CPU tensor would be copied (and synced) in every micro-batch's loss
        denom = dist.sum(algos.agg_denominator(batch.loss_mask, a.agg).float()).to(self.device)
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
        optim_seconds, skipped = 0.0, None
        # aha reads nothing back inside a pass (the batch's checks are on the CPU; loss and metrics add up on the
        # device), so the CPU can queue work ahead of the GPU; the update is host-bound at small micro-batches
        # (benchmarks/update_layouts.py). Left: transformers' mask code syncs once per forward when no attention
        # mask is passed (find_packed_sequence_indices), and the shared-prompt forward reads prompt lengths.
        for _ in range(a.mu):
            self.optimizer.zero_grad(set_to_none=True)
            pass_loss = torch.zeros((), device=self.device)  # this rank's share: is it finite?
            for idx, weight in mbs:
                sel = batch.select(idx)
                share = weight * float(sel.loss_mask.sum()) / n_tokens  # metrics: token means
                mb = sel.to(self.device)
                logp, entropy = sequence_logprobs(
                    self.policy,
                    mb.input_ids,
                    mb.attention_mask,
                    temperature=batch.logprob_temperature,
                    with_entropy=True,
                    prompt_lens=self.prompt_lens(mb),
                    padded_right=right_padded(sel.attention_mask),
                    ids_checked=True,
                )
                old = mb.old_logp if mb.old_logp is not None else logp.detach()
                is_weight, is_metrics = algos.rollout_is_weights(
                    old,
                    mb.sampler_logp,
                    mb.loss_mask,
                    a.rollout_is,
                    c_min=a.rollout_is_min,
                    c_max=a.rollout_is_max,
                )
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
                    is_weight=is_weight,
                )
                m = dict(m, **is_metrics)
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
                pass_loss = pass_loss + weight * m["loss"].float()
                for k, v in m.items():
                    wk = weight if k in SUMMED else share
                    sums[k] = sums.get(k, 0.0) + wk * v.detach().float() / a.mu
            t_opt = self._sync_time()
            loss_ok = math.isfinite(float(pass_loss))
            # the rate this step takes (clip_and_step then advances it)
            lr = self.scheduler.get_last_lr()[0]
            grad_norm, stepped = clip_and_step(
                self.policy,
                self.optimizer,
                self.scheduler,
                self.cfg.optim.max_grad_norm,
                ok=loss_ok,
                dist=dist,
            )
            optim_seconds += self._sync_time() - t_opt
            if not stepped:  # the later passes would repeat the same batch on the same weights
                what = "gradient norm" if loss_ok else "loss"
                skipped = f"non-finite {what} in the policy update"
                break
        t2 = time.perf_counter()
        keys = sorted(sums)
        totals = (
            dist.sum(
                torch.stack([torch.as_tensor(sums[k], device=self.device) for k in keys])
            ).tolist()
            if keys
            else []
        )
        out = dict(zip(keys, totals))
        out.update(
            {
                "grad_norm": float(grad_norm),
                "lr": lr,
                "time/logprobs": t1 - t0,
                "time/update": t2 - t1,
                "time/optimizer": optim_seconds,
                "micro_batches": len(mbs),
            }
        )
        if skipped is not None:
            out[SKIP_KEY] = skipped
        return out

    def _sync_time(self) -> float:
        """A timestamp after the GPU has caught up (for the time split only)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
