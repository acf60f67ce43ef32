"""Advantage estimators: how much better than its baseline each sample (or token) did.

Outcome estimators (one scalar reward per completion, rewards (N,) laid out group by group, G = group_size
completions of the same prompt next to each other), all called `f(rewards, group_size) -> (adv (N,), metrics)`:

    grpo      A_i = (r_i - mean_g) / (std_g + 1e-6)      std_g: unbiased std of the group (DeepSeekMath eq. 3)
              std_scale="batch": divide by the unbiased std of all N rewards; "none": do not divide (Dr. GRPO,
              Liu et al. 2025, who show the std term up-weights too-easy / too-hard prompts).
    dr_grpo   grpo with std_scale="none".
    rloo      A_i = r_i - mean of the other G-1 rewards of the group  (= G/(G-1) * (r_i - mean_g)).
    remax     A_i = r_i - b_g, b_g the reward of the prompt's greedy completion (Li et al. 2023: the baseline
              costs one greedy generation per prompt instead of a value model); needs baseline= (N/G,).
    reinforce++  A = whiten(r) over the whole batch (Hu 2025: no per-prompt baseline; batch normalisation keeps
              it stable); baseline=True subtracts the group mean first ("REINFORCE++-baseline").
              With a (B, T) mask it is the token-level form: r placed on the last valid token (or (B, T) token
              rewards, e.g. with a -beta*KL term), discounted returns-to-go, whitened over all valid tokens.

A NaN reward means "no reward function applies to this sample": it is left out of every mean/std and gets
advantage 0 (so it contributes no gradient). A group whose valid rewards are all equal gets exactly 0 (not
float noise divided by 1e-6). Outputs are detached; dtype is the input's if it is a floating torch tensor, else
float32 (statistics are computed in float64).

Value-based estimator (PPO, issue 8):
    gae(token_rewards, values, mask, *, gamma, lam) -> (advantages, returns), all (B, T):
        delta_t = r_t + gamma * V_{t+1} - V_t, with V after the last valid token = 0
        A_t     = sum_k (gamma * lam)^k delta_{t+k},   returns = A + V
    Positions outside the mask are skipped (as if absent: left or right padding, or holes such as tool output
    inside a multi-turn completion) and get 0 in both outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from .masked import masked_whiten

STD_SCALES = ("group", "batch", "none")


def _to64(rewards) -> tuple[Tensor, torch.dtype]:
    t = torch.as_tensor(rewards)
    out_dtype = t.dtype if isinstance(rewards, Tensor) and t.is_floating_point() else torch.float32
    return t.detach().to(torch.float64), out_dtype


def _groups(r: Tensor, group_size: int) -> Tensor:
    if r.dim() != 1:
        raise ValueError(
            f"rewards must be 1-D (N,), got shape {tuple(r.shape)}; flatten the groups prompt-major"
        )
    if group_size < 1 or r.numel() % group_size:
        raise ValueError(
            f"{r.numel()} rewards do not split into groups of {group_size}; pass N = prompts * group_size"
        )
    return r.view(-1, group_size)  # (N/G, G)


def _group_centered(r: Tensor, group_size: int):
    """Per group: rewards minus the mean of the valid ones. Returns centered (N/G, G), valid, n_valid, equal."""
    g = _groups(r, group_size)
    valid = ~torch.isnan(g)
    n = valid.sum(1)  # (N/G,)
    mean = torch.where(valid, g, 0.0).sum(1) / n.clamp(min=1)
    hi = torch.where(valid, g, -torch.inf).amax(1)
    lo = torch.where(valid, g, torch.inf).amin(1)
    equal = (n < 2) | (hi == lo)  # nothing to compare against: zero advantage, exactly
    centered = torch.where(valid & ~equal[:, None], g - mean[:, None], 0.0)
    return centered, valid, n, equal


def _std(centered: Tensor, n: Tensor, dim: int | None) -> Tensor:
    ss = (centered**2).sum() if dim is None else (centered**2).sum(dim)
    return (ss / (n - 1).clamp(min=1)).sqrt()


def grpo(
    rewards, group_size: int, *, std_scale: str = "group", eps: float = 1e-6
) -> tuple[Tensor, dict]:
    """GRPO advantages. rewards (N,) -> (adv (N,), {"frac_reward_zero_std", "frac_reward_nan"})."""
    if std_scale not in STD_SCALES:
        raise ValueError(f"unknown std_scale {std_scale!r}; valid: {', '.join(STD_SCALES)}")
    r, out_dtype = _to64(rewards)
    centered, valid, n, equal = _group_centered(r, group_size)
    if std_scale == "group":
        adv = centered / (_std(centered, n, 1)[:, None] + eps)
    elif std_scale == "batch":
        flat_valid = ~torch.isnan(r)
        nb = flat_valid.sum()
        batch_mean = torch.where(flat_valid, r, 0.0).sum() / nb.clamp(min=1)
        adv = centered / (_std(torch.where(flat_valid, r - batch_mean, 0.0), nb, None) + eps)
    else:
        adv = centered
    return adv.reshape(-1).to(out_dtype), _group_metrics(equal, valid)


def rloo(rewards, group_size: int) -> tuple[Tensor, dict]:
    """RLOO (Ahmadian et al. 2024): r_i minus the mean of the other valid rewards of its group.

    rewards (N,) -> (adv (N,), {"frac_reward_zero_std", "frac_reward_nan"}). With n valid rewards in a group,
    r_i - (S - r_i)/(n-1) = n/(n-1) * (r_i - S/n); a group with fewer than 2 valid rewards gets 0.
    """
    r, out_dtype = _to64(rewards)
    centered, valid, n, equal = _group_centered(r, group_size)
    adv = centered * (n.double() / (n - 1).clamp(min=1))[:, None]
    return adv.reshape(-1).to(out_dtype), _group_metrics(equal, valid)


def remax(rewards, group_size: int, *, baseline=None) -> tuple[Tensor, dict]:
    """ReMax: rewards (N,) minus their prompt's greedy-completion reward baseline (N/G,) -> (adv (N,), metrics).

    A NaN reward gets 0; a NaN baseline (no reward function applied to the greedy completion) zeroes its group.
    """
    if baseline is None:
        raise ValueError(
            "remax needs baseline=: the reward of each prompt's greedy completion, shape (N/G,)"
        )
    r, out_dtype = _to64(rewards)
    g = _groups(r, group_size)  # (N/G, G)
    b = torch.as_tensor(baseline).detach().to(torch.float64).reshape(-1)
    if b.numel() != g.shape[0]:
        raise ValueError(
            f"remax baseline has {b.numel()} values for {g.shape[0]} groups; pass one per prompt"
        )
    valid = ~torch.isnan(g) & ~torch.isnan(b)[:, None]
    adv = torch.where(valid, g - b[:, None], 0.0)
    equal = (adv == 0).all(1)  # no sample differs from the baseline
    return adv.reshape(-1).to(out_dtype), {
        **_group_metrics(equal, ~torch.isnan(g)),
        "reward/greedy": torch.nanmean(b).float(),
    }


def _group_metrics(equal: Tensor, valid: Tensor) -> dict:
    return {
        "frac_reward_zero_std": equal.float().mean(),  # groups that carry no learning signal (DAPO drops them)
        "frac_reward_nan": (~valid).float().mean(),
    }


def zero_std_groups(rewards, group_size: int) -> Tensor:
    """(N/G,) bool: groups whose valid rewards are all equal (or < 2 valid): DAPO dynamic sampling drops them."""
    r, _ = _to64(rewards)
    return _group_centered(r, group_size)[3]


def token_level_rewards(
    scores, mask: Tensor, *, kl: Tensor | None = None, kl_coef: float = 0.0
) -> Tensor:
    """Classic RLHF per-token reward (Ziegler et al. 2019): the sequence score on its last valid token, minus
    kl_coef * kl on every valid token. scores (B,), mask (B, T), kl (B, T) (e.g. k1 to the reference) -> (B, T).

    A NaN score is put as 0. Rows without valid tokens get all zeros. The result keeps the dtype of floating
    `scores` (float64 in, float64 out); other scores (ints, lists) give float32.
    """
    mask = mask.to(torch.bool)
    s = torch.as_tensor(scores, device=mask.device).detach()
    s = torch.nan_to_num(s if s.is_floating_point() else s.to(torch.float32))
    out = _on_last_token(s, mask)
    if kl is not None:
        out = out - kl_coef * torch.where(mask, kl.detach().to(s.dtype), 0.0)
    return out


def _on_last_token(s: Tensor, mask: Tensor) -> Tensor:
    """scores (B,) -> (B, T) with s[b] on row b's last valid token, 0 elsewhere (and on rows with none)."""
    if mask.dim() != 2 or s.shape != mask.shape[:1]:
        raise ValueError(
            f"scores shape {tuple(s.shape)} does not match mask {tuple(mask.shape)}; pass one score per row"
        )
    last = (
        mask.shape[1] - 1 - mask.flip(1).to(torch.int64).argmax(1)
    )  # (B,) index of the last valid token
    out = torch.zeros(mask.shape, dtype=s.dtype, device=mask.device)
    out[torch.arange(mask.shape[0], device=mask.device), last] = s
    return torch.where(mask, out, 0.0)


def _gae_loop(r: Tensor, v: Tensor, m: Tensor, gamma: float, lam: float) -> Tensor:
    """Backward recursion over T (vectorised over B); invalid positions carry the state through untouched."""
    B, T = r.shape
    adv = torch.zeros_like(r)
    last_gae = torch.zeros(B, dtype=r.dtype, device=r.device)
    next_v = torch.zeros(B, dtype=r.dtype, device=r.device)  # V after the last valid token = 0
    for t in reversed(range(T)):
        mt = m[:, t]
        delta = r[:, t] + gamma * next_v - v[:, t]
        new_gae = delta + gamma * lam * last_gae
        last_gae = torch.where(mt, new_gae, last_gae)
        next_v = torch.where(mt, v[:, t], next_v)
        adv[:, t] = torch.where(mt, new_gae, 0.0)
    return adv


def gae(
    token_rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    *,
    gamma: float,
    lam: float,
    whiten: bool = False,
) -> tuple[Tensor, Tensor]:
    """GAE (Schulman et al. 2016). token_rewards, values, mask (B, T) -> (advantages (B, T), returns (B, T)).

    returns = A + V uses the raw advantages; whiten=True then whitens the advantages over valid tokens
    (`masked_whiten`). Both outputs are detached, 0 outside the mask, in float32 (float64 if the input is).
    """
    if not (token_rewards.shape == values.shape == mask.shape) or token_rewards.dim() != 2:
        raise ValueError(
            f"gae needs (B, T) token_rewards, values and mask of one shape; got "
            f"{tuple(token_rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}"
        )
    dtype = torch.float64 if token_rewards.dtype == torch.float64 else torch.float32
    r, v = token_rewards.detach().to(dtype), values.detach().to(dtype)
    m = mask.to(device=r.device, dtype=torch.bool)
    with torch.no_grad():
        adv = _gae_loop(torch.where(m, r, 0.0), torch.where(m, v, 0.0), m, gamma, lam)
        returns = torch.where(m, adv + v, 0.0)
        if whiten:
            adv = masked_whiten(adv, m)
    return adv, returns


def reinforce_pp(
    rewards,
    group_size: int | None = None,
    *,
    mask: Tensor | None = None,
    gamma: float = 1.0,
    baseline: bool = False,
    eps: float = 1e-6,
) -> tuple[Tensor, dict]:
    """REINFORCE++ advantages: batch-whitened (discounted) returns.

    rewards (N,) without mask -> adv (N,) = (r - mean) / (std + eps) over the non-NaN rewards of the batch.
    rewards (N,) or token rewards (B, T) with mask (B, T) -> adv (B, T): returns-to-go
    G_t = sum_k gamma^k r_{t+k} over valid tokens, whitened over all valid tokens of the batch.
    group_size is only used with baseline=True (subtract the group mean before whitening); it is accepted
    otherwise so every outcome estimator shares one call signature. Metrics: "return_mean", "return_std"
    (before whitening).
    """
    r, out_dtype = _to64(rewards)
    if baseline:
        if group_size is None or r.dim() != 1:
            raise ValueError("reinforce++ baseline=True needs scalar rewards (N,) and group_size")
        centered, valid, _, _ = _group_centered(r, group_size)
        r = torch.where(valid, centered, torch.nan).reshape(-1)
    if mask is None:
        if r.dim() != 1:
            raise ValueError(f"token rewards of shape {tuple(r.shape)} need a (B, T) mask")
        valid = ~torch.isnan(r)
        x = torch.where(valid, r, 0.0)
    else:
        m = mask.to(device=r.device, dtype=torch.bool)
        if r.dim() == 1:
            row_ok = ~torch.isnan(r)
            m = m & row_ok[:, None]
            tok = _on_last_token(torch.nan_to_num(r), m)
        else:
            tok = r
        valid = m
        x = _gae_loop(torch.where(m, tok, 0.0), torch.zeros_like(tok), m, gamma, 1.0)
    n = valid.sum()
    mean = torch.where(valid, x, 0.0).sum() / n.clamp(min=1)
    std = _std(torch.where(valid, x - mean, 0.0), n, None)
    adv = torch.where(valid, (x - mean) / (std + eps), 0.0)
    return adv.to(out_dtype), {"return_mean": mean.float(), "return_std": std.float()}


AdvantageFn = Callable[..., tuple]

ADVANTAGES: dict[str, AdvantageFn] = {
    "grpo": grpo,
    "dr_grpo": partial(grpo, std_scale="none"),
    "rloo": rloo,
    "remax": remax,
    "reinforce++": reinforce_pp,
    "reinforce++_baseline": partial(reinforce_pp, baseline=True),
    "gae": gae,  # value-based: gae(token_rewards, values, mask, *, gamma, lam) -> (advantages, returns)
}


def get_advantage(name: str) -> AdvantageFn:
    """Estimator by config name. Outcome estimators: f(rewards (N,), group_size) -> (adv (N,), metrics)."""
    try:
        return ADVANTAGES[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; valid: {', '.join(ADVANTAGES)}"
        ) from None
