"""Value-based advantages (PPO): the classic RLHF token rewards and GAE, all (B, T) with a mask.

    token_level_rewards(scores, mask, kl=, kl_coef=)   the sequence score on the last valid token, - c * kl
    gae(token_rewards, values, mask, *, gamma, lam) -> (advantages, returns):
        delta_t = r_t + gamma * V_{t+1} - V_t, with V after the last valid token = 0
        A_t     = sum_k (gamma * lam)^k delta_{t+k},   returns = A + V
Positions outside the mask are skipped (as if absent: left or right padding, or holes such as tool output inside
a multi-turn completion) and get 0 in both outputs. REINFORCE++'s token-level form (advantages.py) reuses the
recursion with V = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .masked import masked_whiten


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
