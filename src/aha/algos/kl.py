"""Per-token estimators of KL(pi || pi_ref) from tokens sampled from pi, and the KL-coefficient controllers.

With log r = ref_logp - logp (so E_pi[r] = 1), following Schulman's "Approximating KL divergence" note:

    k1 = logp - ref_logp                                  unbiased, high variance, can be negative
    k2 = (logp - ref_logp)^2 / 2                          biased, low variance, >= 0
    k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1     unbiased, low variance, >= 0 (GRPO, DeepSeekMath eq. 4)

Computed exactly as written (no clamping): a log-ratio above ~88 overflows exp in float32, which only happens
when the policy has left the reference completely; pass float32 log-probs (not bf16).

Controllers (classic RLHF PPO, Ziegler et al. 2019, section 2.2) hold the coefficient beta of the
KL penalty in the reward:
    FixedKLController(beta):               beta never changes.
    AdaptiveKLController(beta, target, horizon):
        e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon)
    so beta rises while the measured KL is above target and falls while it is below.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    return logp - ref_logp


def _k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    return 0.5 * (logp - ref_logp) ** 2


def _k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    d = ref_logp - logp
    return torch.exp(d) - d - 1


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token KL estimate. logp, ref_logp (B, T) -> (B, T); differentiable w.r.t. logp.

    Aggregate it (times beta) with `losses.agg_loss` using the same agg and mask as the policy loss.
    """
    try:
        fn = KL_ESTIMATORS[kind]
    except KeyError:
        raise ValueError(
            f"unknown KL estimator {kind!r}; valid: {', '.join(KL_ESTIMATORS)}"
        ) from None
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"logp shape {tuple(logp.shape)} != ref_logp shape {tuple(ref_logp.shape)}"
        )
    return fn(logp, ref_logp)


class FixedKLController:
    """beta stays at its initial value; `update` is accepted and ignored so both controllers swap freely."""

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class AdaptiveKLController:
    """Proportional controller of Ziegler et al. (2019): drives the measured KL towards `target`.

    current_kl: the batch's mean per-sequence KL (plain float, same units as target); n_steps: samples
    (or steps) since the last update, in the units of `horizon`.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if init_kl_coef < 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"need init_kl_coef >= 0, target > 0, horizon > 0; got {init_kl_coef}, {target}, {horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def kl_controller(
    kind: str, kl_coef: float, *, target: float | None = None, horizon: float = 10000
):
    """ "fixed" -> FixedKLController(kl_coef); "adaptive" -> AdaptiveKLController(kl_coef, target, horizon)."""
    if kind == "fixed":
        return FixedKLController(kl_coef)
    if kind == "adaptive":
        if target is None:
            raise ValueError("adaptive KL controller needs target (the KL to aim for, e.g. 6.0)")
        return AdaptiveKLController(kl_coef, target, horizon)
    raise ValueError(f"unknown KL controller {kind!r}; valid: fixed, adaptive")
