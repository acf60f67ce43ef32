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
float32 (statistics are computed in float64, on values divided by a power of two when they exceed 2**512, so
rewards up to float64's limit give finite means and stds; the training loop skips any non-finite remainder).

Value-based estimator (PPO): gae (gae.py), re-exported here with the registry.

std_scale: every outcome estimator takes one; STD_SCALES_OF lists the ones each accepts, its default first.
"group" divides a sample's advantage by the unbiased std of its group's valid rewards (+ eps), "batch" by that of
all valid rewards, "none" does not divide. ReMax accepts only "none": its advantages are not centred on the group,
so a group of equal rewards (std 0) that differs from its baseline would be divided by eps. REINFORCE++ is batch
normalisation by definition ("batch"; "none" only centres); "group" would make it GRPO.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from ..algo_names import STD_SCALES_OF  # noqa: F401 (re-exported)
from .gae import _gae_loop, _on_last_token, gae, token_level_rewards  # noqa: F401 (re-exported)

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


def _pow2(x: Tensor, dim: int | None) -> Tensor:
    """A power of two within 2x of max|x| (over dim, kept as size 1; NaN ignored) where that exceeds 2**512, else 1.
    Dividing by it is exact, and sums and squares of the quotients cannot overflow: a group with rewards of
    1e308 has a finite mean and std (float64 overflows at 1.8e308). Rewards below 2**512 are untouched, so
    every ordinary result is bit-for-bit that of the plain formula."""
    big = torch.nan_to_num(x.abs(), nan=0.0)
    big = big.amax() if dim is None else big.amax(dim, keepdim=True)
    # big = m * 2^e with m in [0.5, 1): divide by 2^(e-1), which float64 holds up to its largest finite value
    return torch.where(
        big > 2.0**512, torch.ldexp(torch.ones_like(big), torch.frexp(big)[1] - 1), 1.0
    )


def _mean(x: Tensor, valid: Tensor, n: Tensor, dim: int | None) -> Tensor:
    """Mean of x's valid entries over dim (all for None), computed on x / _pow2(x) so the sum cannot overflow."""
    s = _pow2(torch.where(valid, x, 0.0), dim)
    q = torch.where(valid, x / s, 0.0)
    total = q.sum() if dim is None else q.sum(dim)
    return total / n.clamp(min=1) * s.reshape(total.shape)


def _group_centered(r: Tensor, group_size: int):
    """Per group: rewards minus the mean of the valid ones. Returns centered (N/G, G), valid, n_valid, equal."""
    g = _groups(r, group_size)
    valid = ~torch.isnan(g)
    n = valid.sum(1)  # (N/G,)
    mean = _mean(g, valid, n, 1)
    hi = torch.where(valid, g, -torch.inf).amax(1)
    lo = torch.where(valid, g, torch.inf).amin(1)
    equal = (n < 2) | (hi == lo)  # nothing to compare against: zero advantage, exactly
    centered = torch.where(valid & ~equal[:, None], g - mean[:, None], 0.0)
    return centered, valid, n, equal


def _std(centered: Tensor, n: Tensor, dim: int | None) -> Tensor:
    s = _pow2(
        centered, dim
    )  # exact scaling: the squares cannot overflow (sqrt(x / 4^k) = sqrt(x) / 2^k)
    q = centered / s
    ss = (q**2).sum() if dim is None else (q**2).sum(dim)
    return (ss / (n - 1).clamp(min=1)).sqrt() * s.reshape(ss.shape)


def _check_scale(name: str, std_scale: str) -> None:
    if std_scale not in STD_SCALES_OF[name]:
        raise ValueError(
            f"{name} takes std_scale {' or '.join(STD_SCALES_OF[name])}, got {std_scale!r}"
        )


def _scaled(adv: Tensor, r: Tensor, centered: Tensor, n: Tensor, std_scale: str, eps: float):
    """adv (N/G, G) divided by the group's (from `centered`, n valid each) or the batch's reward std (+ eps)."""
    if std_scale == "group":
        return adv / (_std(centered, n, 1)[:, None] + eps)
    if std_scale == "batch":
        valid = ~torch.isnan(r)
        nb = valid.sum()
        mean = _mean(r, valid, nb, None)
        return adv / (_std(torch.where(valid, r - mean, 0.0), nb, None) + eps)
    return adv


def grpo(
    rewards, group_size: int, *, std_scale: str = "group", eps: float = 1e-6
) -> tuple[Tensor, dict]:
    """GRPO advantages. rewards (N,) -> (adv (N,), {"frac_reward_zero_std", "frac_reward_nan"})."""
    if std_scale not in STD_SCALES:
        raise ValueError(f"unknown std_scale {std_scale!r}; valid: {', '.join(STD_SCALES)}")
    r, out_dtype = _to64(rewards)
    centered, valid, n, equal = _group_centered(r, group_size)
    adv = _scaled(centered, r, centered, n, std_scale, eps)
    return adv.reshape(-1).to(out_dtype), _group_metrics(equal, valid)


def rloo(
    rewards, group_size: int, *, std_scale: str = "none", eps: float = 1e-6
) -> tuple[Tensor, dict]:
    """RLOO (Ahmadian et al. 2024): r_i minus the mean of the other valid rewards of its group.

    rewards (N,) -> (adv (N,), {"frac_reward_zero_std", "frac_reward_nan"}). With n valid rewards in a group,
    r_i - (S - r_i)/(n-1) = n/(n-1) * (r_i - S/n); a group with fewer than 2 valid rewards gets 0.
    std_scale "group"/"batch" then divides by the group's/batch's reward std (module docstring).
    """
    _check_scale("rloo", std_scale)
    r, out_dtype = _to64(rewards)
    centered, valid, n, equal = _group_centered(r, group_size)
    adv = centered * (n.double() / (n - 1).clamp(min=1))[:, None]
    adv = _scaled(adv, r, centered, n, std_scale, eps)
    return adv.reshape(-1).to(out_dtype), _group_metrics(equal, valid)


def remax(
    rewards, group_size: int, *, baseline=None, std_scale: str = "none"
) -> tuple[Tensor, dict]:
    """ReMax: rewards (N,) minus their prompt's greedy-completion reward baseline (N/G,) -> (adv (N,), metrics).

    A NaN reward gets 0; a NaN baseline (no reward function applied to the greedy completion) zeroes its group.
    std_scale: "none" only (module docstring).
    """
    _check_scale("remax", std_scale)
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


def reinforce_pp(
    rewards,
    group_size: int | None = None,
    *,
    mask: Tensor | None = None,
    gamma: float = 1.0,
    baseline: bool = False,
    std_scale: str = "batch",
    eps: float = 1e-6,
) -> tuple[Tensor, dict]:
    """REINFORCE++ advantages: batch-whitened (discounted) returns.

    rewards (N,) without mask -> adv (N,) = (r - mean) / (std + eps) over the non-NaN rewards of the batch.
    rewards (N,) or token rewards (B, T) with mask (B, T) -> adv (B, T): returns-to-go
    G_t = sum_k gamma^k r_{t+k} over valid tokens, whitened over all valid tokens of the batch.
    group_size is only used with baseline=True (subtract the group mean before whitening); it is accepted
    otherwise so every outcome estimator shares one call signature. std_scale "none" centres without dividing by
    the std. Metrics: "return_mean", "return_std" (before whitening).
    """
    _check_scale("reinforce++", std_scale)
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
    mean = _mean(x, valid, n, None)
    std = _std(torch.where(valid, x - mean, 0.0), n, None)
    scale = std + eps if std_scale == "batch" else 1.0
    adv = torch.where(valid, (x - mean) / scale, 0.0)
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
