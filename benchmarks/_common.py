"""Helpers shared by the benchmark scripts of this folder (imported as a sibling module: the scripts run as
`python benchmarks/X.py`, which puts this folder first on sys.path, also for the worker processes a script
starts as `python benchmarks/X.py --worker ...`)."""

from __future__ import annotations

import statistics


def require_cuda(device: str) -> None:
    """Stop before any job starts when --device cuda was asked for and no CUDA device is visible."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible; use --device cpu")


def spread(xs) -> str:
    """'mean ± std (min..max)' of the values that are not None; one value as is, none as n/a."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f} ({min(xs):.2f}..{max(xs):.2f})"
