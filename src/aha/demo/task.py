"""The demo's RL task, "chain": evaluate a chain of additions/subtractions ("Compute 37+5-8+6").

Rows: {"question": "Compute 37+5-8+6", "answer": "40", "terms": 4}. Verified by the "exact" reward
(the <answer> block must equal the integer). Row i of a split is the first problem drawn from
Random(f"chain:{seed}:{split}:{i}:{attempt}") whose hash bucket (problems.split_of) is that split, so train
and test are disjoint by construction, and the pretraining corpus (which only draws "train" problems) never
contains a test problem.
"""

from __future__ import annotations

import random

from aha.data import Task, register_task
from aha.data.tasks import ProceduralRows

from .problems import Problem, sample_problem, split_of

QUESTION = "Compute {expression}"


def problem_row(p: Problem) -> dict:
    return {
        "question": QUESTION.format(expression=p.expression),
        "answer": str(p.answer),
        "terms": len(p.numbers),
    }


@register_task("chain")
class ChainTask(Task):
    accuracy_reward = "exact"

    def __init__(
        self,
        *,
        seed: int = 0,
        train_size: int = 100_000,
        test_size: int = 1_000,
        min_terms: int = 3,
        max_terms: int = 5,
    ):
        if not 3 <= min_terms <= max_terms:  # held-out problems have >= 3 numbers (see problems.py)
            raise ValueError(
                f"chain task needs 3 <= min_terms <= max_terms, got {min_terms}..{max_terms}"
            )
        self.name, self.seed = "chain", seed
        self.sizes = {"train": train_size, "test": test_size}
        self.min_terms, self.max_terms = min_terms, max_terms

    def dataset(self, split: str) -> ProceduralRows:
        if split not in self.sizes:
            raise ValueError(f"unknown split {split!r}; valid: train, test")
        return ProceduralRows(
            self._make, split, self.sizes[split], f"chain:{self.seed}", split_fn=split_of
        )

    def _make(self, rng: random.Random) -> tuple[str, dict]:
        p = sample_problem(rng, self.min_terms, self.max_terms)
        return p.expression, problem_row(p)
