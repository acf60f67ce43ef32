"""Estimators for sampled evaluation: pass@1 over k samples, unbiased pass@k, cons@k, bootstrap intervals.

With n samples of one problem of which c are correct:

    pass@1 (R1 paper)   = c / n                                   the mean correctness of the n samples
    pass@k (Chen 2021)  = 1 - C(n-c, k) / C(n, k)                 P(at least one of k draws without
                        = 1 - prod_{i=n-c+1}^{n} (1 - k / i)      replacement from the n is correct)
    cons@k              = correctness of the majority-vote answer of the k samples

The product form never forms a binomial coefficient, so it neither overflows nor loses precision for
n in the thousands. Every figure is then averaged over problems, and its uncertainty is a percentile bootstrap
over problems (the unit that was sampled from the benchmark), not over samples.

Majority vote (cons@k): answers are grouped with an equivalence function (e.g. "1/2" ~ "0.5" for math), not
string equality. Grouping is greedy in sample order: each answer joins the first existing group whose
representative (its first member) it is equivalent to, otherwise it opens a new group, so the equivalence is
only ever asked of (representative, answer) pairs and need not be transitive. The largest group wins; a tie
goes to the group whose first member came earliest. None (no answer extracted) never forms a group, so it wins
only when every answer is None. The winner's correctness is that of its representative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["pass_at_k", "pass1", "majority_vote", "cons_at_k", "bootstrap_ci", "normalized_equal"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, numerically stable product form)."""
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in (n, c, k)):
        raise ValueError(f"pass_at_k takes integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(
            f"pass_at_k needs 1 <= k <= n, got k={k} with n={n}; draw at least k samples"
        )
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def pass1(correct: Sequence[bool | float]) -> float:
    """Mean correctness over the k samples of one problem (the R1 paper's pass@1); NaN for no samples."""
    arr = np.asarray(correct, dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def normalized_equal(a: Any, b: Any) -> bool:
    """Default answer equivalence: equal after stripping whitespace and `$`, and as numbers when both parse
    ("0.50" ~ ".5", "1,000" ~ "1000"). Tasks with richer answers pass their own (e.g. math-verify)."""
    sa, sb = _norm(a), _norm(b)
    if sa == sb:
        return True
    fa, fb = _as_number(sa), _as_number(sb)
    return fa is not None and fb is not None and fa == fb


def _norm(x: Any) -> str:
    return "".join(str(x).split()).strip("$").rstrip(".")


def _as_number(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except (ValueError, OverflowError):
        return None


def majority_vote(
    answers: Sequence[Any], equivalent: Callable[[Any, Any], bool] = normalized_equal
) -> tuple[int, list[int]]:
    """Greedy grouping + vote (rules in the module docstring).

    Returns (winner, group_of): `winner` is the index of the winning group's representative (its first
    member), `group_of[i]` the representative index of answer i's group (-1 for None answers). When every
    answer is None the winner is 0 (the "None group", represented by the first sample).
    """
    if len(answers) == 0:
        raise ValueError("majority_vote needs at least one answer")
    reps: list[int] = []  # representative index of each group, in order of first occurrence
    counts: list[int] = []
    group_of = [-1] * len(answers)
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        for g, r in enumerate(reps):
            if _safe_equiv(equivalent, answers[r], ans):
                counts[g] += 1
                group_of[i] = r
                break
        else:
            reps.append(i)
            counts.append(1)
            group_of[i] = i
    if not reps:
        return 0, group_of
    best = max(
        range(len(reps)), key=lambda g: (counts[g], -reps[g])
    )  # larger count, then earlier first
    return reps[best], group_of


def _safe_equiv(equivalent, a, b) -> bool:
    # An equivalence on model output must not abort a whole evaluation; an error means "not equivalent".
    try:
        return bool(equivalent(a, b))
    except Exception:
        return False


def cons_at_k(
    answers: Sequence[Any],
    correct_flags: Sequence[bool | float],
    *,
    equivalent: Callable[[Any, Any], bool] = normalized_equal,
) -> float:
    """1.0 if the majority-vote answer of one problem's k samples is correct, else 0.0 (rules above)."""
    if len(answers) != len(correct_flags):
        raise ValueError(
            f"cons_at_k got {len(answers)} answers but {len(correct_flags)} correct flags"
        )
    winner, _ = majority_vote(answers, equivalent)
    return float(bool(correct_flags[winner]))


def bootstrap_ci(
    per_problem_values,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: Callable = np.mean,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over problems.

    per_problem_values: (P,) one value per problem, or (P, k) k values per problem; problems (rows) are
    resampled with replacement and `statistic(sample.reshape(n_boot, -1), axis=1)` is taken, so a (P, k)
    matrix of lengths gives the interval of the median over all samples with np.median.
    Returns (lo, hi) = the alpha/2 and 1 - alpha/2 quantiles; (nan, nan) without problems or with n_boot=0.
    Non-finite rows are dropped first (e.g. a metric that does not apply to some problems).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci alpha must be in (0, 1), got {alpha}")
    vals = np.asarray(per_problem_values, dtype=np.float64)
    if vals.ndim == 1:
        vals = vals[:, None]  # (P, 1)
    if vals.ndim != 2:
        raise ValueError(f"bootstrap_ci takes a (P,) or (P, k) array, got shape {vals.shape}")
    vals = vals[np.isfinite(vals).all(axis=1)]
    p = vals.shape[0]
    if p == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, p, size=(n_boot, p))  # (B, P)
    stats = statistic(vals[idx].reshape(n_boot, -1), axis=1)  # (B,)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
