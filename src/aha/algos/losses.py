"""Policy and value losses, and the aggregation of a per-token term into one scalar.

Per token, ratio = exp(logp - old_logp) and (PPO clip, Schulman et al. 2017; asymmetric "clip-higher", DAPO):
    L = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)
    dual clip (Ye et al. 2020), for A < 0 only:  L = min(L, -clip_c * A)     (clip_c > 1)
GSPO (Zheng et al. 2025) uses one ratio per sequence, s = exp(mean_t(logp - old_logp)), in the same formula
(token form: s_t = sg[s] * exp(logp_t - sg[logp_t]), so every token gets the sequence's ratio and gradient).

Aggregation over the valid tokens of (B, T) (`agg_loss`); exactly where GRPO, DAPO and Dr. GRPO differ:
    "seq-mean-token-mean"      mean over each sequence's valid tokens, then over sequences with >= 1 valid
                               token (GRPO paper; a fully masked sequence does not dilute the others)
    "token-mean"               sum over all valid tokens / their number (DAPO)
    "seq-mean-token-sum-norm"  sum over valid tokens / (B * norm_len) (Dr. GRPO: a constant normaliser)
With no valid token at all the loss is 0, never NaN. `denom` overrides the normaliser (tokens for token-mean,
sequences for the others): pass the whole batch's `agg_denominator` so that micro-batches summed by gradient
accumulation give exactly the full-batch loss.

Rollout correction (truncated / masked importance sampling; Yao et al. 2025 "Your efficient RL framework secretly
brings you off-policy RL training", TRL's vllm_importance_sampling_*): the engine samples from pi_sampler, not
exactly the trained pi_old (other kernels, an fp8 KV cache), so each token's policy-gradient loss is weighted by
w = pi_old / pi_sampler of the sampled token (`rollout_is_weights`), per token or one weight per sequence (the
product of its tokens' ratios), truncated to [c_min, c_max] or set to 0 outside it (mask). The weight is a constant
(no gradient through it); the aggregation's normaliser is unchanged.

Value loss (PPO2 / OpenAI baselines): v_clip = old_v + clip(v - old_v, -clip, clip);
    L = 0.5 * max((v - R)^2, (v_clip - R)^2).
Metrics are detached tensors averaged over valid tokens (token mean, whatever `agg` is); no `.item()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..algo_names import AGGS, ROLLOUT_IS_MODES
from .masked import masked_mean, masked_var


def _check_agg(agg: str, norm_len) -> None:
    if agg not in AGGS:
        raise ValueError(f"unknown loss aggregation {agg!r}; valid: {', '.join(AGGS)}")
    if agg == "seq-mean-token-sum-norm" and (norm_len is None or norm_len <= 0):
        raise ValueError(
            "agg 'seq-mean-token-sum-norm' needs norm_len > 0 (Dr. GRPO: the max completion length)"
        )


def agg_denominator(mask: Tensor, agg: str) -> Tensor:
    """The normaliser agg_loss would use for this mask (norm_len aside): valid tokens for "token-mean",
    sequences with a valid token for "seq-mean-token-mean", all rows B for "seq-mean-token-sum-norm"."""
    _check_agg(agg, 1)
    m = mask.to(torch.bool)
    if agg == "token-mean":
        return m.sum()
    if agg == "seq-mean-token-mean":
        return m.any(1).sum()
    return torch.tensor(m.shape[0], device=m.device)


def agg_loss(
    values: Tensor,
    mask: Tensor,
    agg: str = "token-mean",
    norm_len: int | None = None,
    *,
    denom: Tensor | float | None = None,
) -> Tensor:
    """values, mask (B, T) -> scalar. See the module docstring for the three modes."""
    _check_agg(agg, norm_len)
    if values.dim() != 2:
        raise ValueError(f"agg_loss needs (B, T) values, got shape {tuple(values.shape)}")
    if mask.shape != values.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} != values shape {tuple(values.shape)}; pass one mask entry per value"
        )
    m = mask.to(device=values.device, dtype=torch.bool)
    z = torch.where(
        m, values, torch.zeros((), dtype=values.dtype, device=values.device)
    )  # NaN-safe on padding
    if denom is None:
        denom = agg_denominator(m, agg)
    denom = torch.as_tensor(denom, device=values.device).to(values.dtype).clamp(min=1)
    if agg == "token-mean":
        return z.sum() / denom
    if agg == "seq-mean-token-mean":
        per_seq = z.sum(1) / m.sum(1).clamp(min=1).to(values.dtype)  # (B,); 0 for empty rows
        return per_seq.sum() / denom
    return z.sum() / (denom * norm_len)


def _broadcast_adv(advantages: Tensor, like: Tensor) -> Tensor:
    if advantages.dim() == 1 and advantages.shape[0] == like.shape[0]:
        advantages = advantages[:, None]  # (B, 1): one advantage for every token of the sequence
    elif advantages.shape != like.shape:
        raise ValueError(
            f"advantages shape {tuple(advantages.shape)} fits neither (B,) nor (B, T) = {tuple(like.shape)}"
        )
    return advantages.detach().to(like.dtype)


def _clipped_pg(
    ratio, adv, m, clip_low, clip_high, clip_c, log_ratio, agg, norm_len, denom, is_weight=None
):
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low/clip_high must be >= 0, got {clip_low}, {clip_high}")
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(pg_unclipped, pg_clipped)  # = -min(ratio*A, clip(ratio)*A)
    with torch.no_grad():
        r = ratio.detach()
        metrics = {
            # tokens whose gradient the clip cuts: the ratio left the trust region in the direction A pushes
            "clip_frac_low": masked_mean(((r < 1 - clip_low) & (adv < 0)).to(r.dtype), m),
            "clip_frac_high": masked_mean(((r > 1 + clip_high) & (adv > 0)).to(r.dtype), m),
        }
    if clip_c is not None:
        if clip_c <= 1:
            raise ValueError(
                f"clip_c (dual clip) must be > 1, got {clip_c}; use e.g. 3.0 or None to disable"
            )
        dual = torch.minimum(loss, -clip_c * adv)
        with torch.no_grad():
            metrics["clip_frac_dual"] = masked_mean(((adv < 0) & (dual < loss)).to(r.dtype), m)
        loss = torch.where(adv < 0, dual, loss)
    else:
        metrics["clip_frac_dual"] = torch.zeros((), dtype=ratio.dtype, device=ratio.device)
    if is_weight is not None:  # rollout correction: a constant per token (or sequence) factor
        loss = loss * is_weight.detach().to(loss.dtype)
    with torch.no_grad():
        lr = log_ratio.detach()
        # k3 estimate of KL(pi_old || pi) on tokens sampled from pi_old: (r - 1) - log r, >= 0
        metrics["approx_kl"] = masked_mean(torch.expm1(lr) - lr, m)
        metrics["ratio_mean"] = masked_mean(r, m)
    return agg_loss(loss, m, agg, norm_len, denom=denom), metrics


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
    agg: str = "seq-mean-token-mean",
    norm_len: int | None = None,
    denom: Tensor | float | None = None,
    is_weight: Tensor | None = None,
) -> tuple[Tensor, dict]:
    """PPO-clip policy loss. logp, old_logp, mask (B, T); advantages (B,) or (B, T) -> (loss scalar, metrics).

    metrics: clip_frac_low, clip_frac_high, clip_frac_dual (0 without clip_c), approx_kl (k3 of
    KL(old || new): exp(d) - 1 - d with d = logp - old_logp), ratio_mean. Gradient flows through logp only.
    is_weight: (B, T) or (B, 1) rollout-correction weights (`rollout_is_weights`) multiplying each token's loss.
    """
    _check_agg(agg, norm_len)
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask {tuple(mask.shape)} must match"
        )
    m = mask.to(device=logp.device, dtype=torch.bool)
    adv = _broadcast_adv(advantages, logp)
    # Padding may hold garbage (-inf logprobs): zero the log-ratio there so neither exp nor its grad sees it.
    log_ratio = torch.where(
        m, logp - old_logp.detach(), torch.zeros((), dtype=logp.dtype, device=logp.device)
    )
    return _clipped_pg(
        torch.exp(log_ratio),
        adv,
        m,
        clip_low,
        clip_high,
        clip_c,
        log_ratio,
        agg,
        norm_len,
        denom,
        is_weight,
    )


def gspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    clip_c: float | None = None,
    agg: str = "seq-mean-token-mean",
    norm_len: int | None = None,
    denom: Tensor | float | None = None,
    is_weight: Tensor | None = None,
) -> tuple[Tensor, dict]:
    """GSPO: the PPO-clip formula on the sequence-level ratio exp(mean of valid log-ratios). Same shapes and
    metrics as `policy_loss`; defaults are the paper's clip range (3e-4, 4e-4). advantages (B,) or (B, T)."""
    _check_agg(agg, norm_len)
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask {tuple(mask.shape)} must match"
        )
    m = mask.to(device=logp.device, dtype=torch.bool)
    adv = _broadcast_adv(advantages, logp)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    log_ratio = torch.where(m, logp - old_logp.detach(), zero)
    seq_log_ratio = log_ratio.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
    safe_logp = torch.where(m, logp, zero)
    tok_log_ratio = (
        seq_log_ratio.detach() + safe_logp - safe_logp.detach()
    )  # value: sequence's; grad: token's
    return _clipped_pg(
        torch.exp(tok_log_ratio),
        adv,
        m,
        clip_low,
        clip_high,
        clip_c,
        log_ratio,
        agg,
        norm_len,
        denom,
        is_weight,
    )


def rollout_is_weights(
    logp: Tensor,
    sampler_logp: Tensor,
    mask: Tensor,
    mode: str,
    *,
    c_min: float | None = None,
    c_max: float | None = 3.0,
) -> tuple[Tensor | None, dict]:
    """Rollout-correction weights. logp: the trained policy's logprobs of the sampled tokens (pi_old: detached),
    sampler_logp: the engine's, mask (B, T) -> (weights (B, T) for token_* modes or (B, 1) for sequence_*; None
    for "off"), metrics is_weight_mean (token mean of the weights) and is_cut_frac (share of tokens whose
    weight was truncated or masked). A token whose sampler logprob is NaN (not reported) counts as ratio 1."""
    if mode not in ROLLOUT_IS_MODES:
        raise ValueError(
            f"unknown rollout correction {mode!r}; valid: {', '.join(ROLLOUT_IS_MODES)}"
        )
    if mode == "off":
        return None, {}
    if c_min is not None and c_max is not None and not 0 <= c_min < c_max:
        raise ValueError(f"the weight bounds need 0 <= c_min < c_max, got {c_min}, {c_max}")
    m = mask.to(device=logp.device, dtype=torch.bool)
    d = torch.where(m, logp.detach().float() - sampler_logp.to(logp.device).float(), 0.0)
    d = torch.nan_to_num(d, nan=0.0)
    if mode.startswith("sequence"):
        d = d.sum(1, keepdim=True)  # log of the product of the sequence's token ratios
    # bounds in log space: exp of a 4,000-token sequence's log-ratio may overflow, its comparison does not
    lo = -math.inf if not c_min else math.log(c_min)
    hi = math.inf if c_max is None else math.log(c_max)
    cut = (d < lo) | (d > hi)
    top = min(hi, 80.0)  # without c_max a weight is only kept finite (e^80)
    if mode.endswith("truncate"):
        w = torch.exp(d.clamp(lo, top))
    else:
        w = torch.where(cut, 0.0, torch.exp(d.clamp(max=top)))
    metrics = {
        "is_weight_mean": masked_mean(w.expand(m.shape).float(), m),
        "is_cut_frac": masked_mean(cut.expand(m.shape).float(), m),
    }
    return w, metrics


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip: float | None = 0.2,
    agg: str = "token-mean",
    norm_len: int | None = None,
    denom: Tensor | float | None = None,
) -> tuple[Tensor, dict]:
    """Clipped value loss. values, old_values, returns, mask (B, T) -> (loss scalar, metrics).

    clip=None: plain 0.5 * (v - R)^2. metrics: value_clip_frac (tokens whose value moved more than `clip`
    from old_values, i.e. where the clip is active; comparing the two errors instead would count tokens whose
    v_clip differs from v by one rounding step, issue 17 item 14),
    explained_variance = 1 - Var(R - v) / Var(R) over valid tokens (1 = perfect, 0 = no better than the
    mean; reported as 0 when Var(R) = 0), value_mean, return_mean.
    """
    if not (values.shape == old_values.shape == returns.shape == mask.shape):
        raise ValueError("values, old_values, returns and mask must all have the same (B, T) shape")
    m = mask.to(device=values.device, dtype=torch.bool)
    old_values, returns = old_values.detach().to(values.dtype), returns.detach().to(values.dtype)
    err = (values - returns) ** 2
    if clip is None:
        loss = 0.5 * err
        clipped = torch.zeros_like(err, dtype=torch.bool)
    else:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        err_clip = (v_clip - returns) ** 2
        loss = 0.5 * torch.maximum(err, err_clip)
        clipped = (values.detach() - old_values).abs() > clip
    with torch.no_grad():
        v = values.detach()
        var_r = masked_var(returns, m)
        ev = torch.where(
            var_r > 0,
            1 - masked_var(returns - v, m) / var_r.clamp(min=1e-12),
            torch.zeros_like(var_r),
        )
        metrics = {
            "value_clip_frac": masked_mean(clipped.to(v.dtype), m),
            "explained_variance": ev,
            "value_mean": masked_mean(v, m),
            "return_mean": masked_mean(returns, m),
        }
    return agg_loss(loss, m, agg, norm_len, denom=denom), metrics


PolicyLossFn = Callable[..., tuple]

POLICY_LOSSES: dict[str, PolicyLossFn] = {"ppo_clip": policy_loss, "gspo": gspo_loss}


def get_policy_loss(name: str) -> PolicyLossFn:
    """Policy loss by config name: f(logp, old_logp, advantages, mask, **options) -> (loss, metrics)."""
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown policy loss {name!r}; valid: {', '.join(POLICY_LOSSES)}"
        ) from None
