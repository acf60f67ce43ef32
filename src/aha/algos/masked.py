"""Masked reductions over (B, T) tensors: the statistics every estimator and loss takes over valid tokens only.

    masked_mean(x, m)  = sum(x * m) / max(sum(m), 1)
    masked_var(x, m)   = sum((x - mean)^2 * m) / max(sum(m) - 1, 1)      (unbiased, Bessel-corrected)
    masked_whiten(x, m) = (x - mean) / sqrt(var + eps), 0 outside the mask

Positions outside the mask are never read through arithmetic (`torch.where`, not `x * m`), so NaN/inf
padding cannot leak into the result or its gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _as_bool(mask: Tensor, like: Tensor) -> Tensor:
    if mask.shape != like.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} != values shape {tuple(like.shape)}; pass one mask entry per value"
        )
    return mask.to(device=like.device, dtype=torch.bool)


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    m = _as_bool(mask, x)
    z = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return z.sum() if dim is None else z.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over valid entries; 0 (not NaN) where there are none."""
    m = _as_bool(mask, x)
    n = m.sum() if dim is None else m.sum(dim)
    return masked_sum(x, m, dim) / n.clamp(min=1).to(x.dtype)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over all valid entries (a scalar); 0 when fewer than two (unbiased) or none are valid."""
    m = _as_bool(mask, x)
    mean = masked_mean(x, m)
    n = m.sum()
    ss = masked_sum((x - mean) ** 2, m)
    denom = (n - 1) if unbiased else n
    return ss / denom.clamp(min=1).to(x.dtype)


def masked_whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) with mean and unbiased var over valid entries; 0 outside the mask.

    shift_mean=False keeps the mean (only rescales), as some PPO variants do for advantages.
    """
    m = _as_bool(mask, x)
    mean = masked_mean(x, m)
    var = masked_var(x, m)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros((), dtype=out.dtype, device=out.device))
