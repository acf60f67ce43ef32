"""Evaluation: pass@1 over k samples, unbiased pass@k, cons@k (majority vote), length and reflection
statistics with bootstrap intervals over problems, and run reports."""

from .estimators import bootstrap_ci, cons_at_k, majority_vote, normalized_equal, pass1, pass_at_k
from .evaluate import EvalResult, eval_metrics, evaluate
from .held_out import evaluate_task
from .reflection import (
    DEFAULT_PHRASES,
    has_reflection,
    has_revision,
    reflection_rate,
    result_revisions,
    revision_rate,
)
from .report import make_report
from .run import EvalConfig, run_eval

__all__ = [
    "evaluate",
    "eval_metrics",
    "EvalResult",
    "make_report",
    "EvalConfig",
    "run_eval",
    "evaluate_task",
    "pass_at_k",
    "pass1",
    "cons_at_k",
    "majority_vote",
    "normalized_equal",
    "bootstrap_ci",
    "DEFAULT_PHRASES",
    "has_reflection",
    "reflection_rate",
    "has_revision",
    "result_revisions",
    "revision_rate",
]
