"""The "chain" task: evaluate a chain of additions/subtractions ("Compute 37+5-8+6", answer 40).

The task of `aha demo` and of the shipped tiny base models (their corpus, aha.demo.corpus, is written from these
problems); it lives here, with the other tasks, so that data/ never imports the demo.

Why this task: a tiny model cannot fold several operations into one shot (its direct answers are mostly
wrong), but it can do each running step ("37+5 = 42") reliably: a step is a two-digit number plus or minus
one digit, a small table a 2M-parameter model learns in minutes. So the base model is right more often when
it writes the steps out, and RL has a clear signal to lengthen its reasoning, exactly the R1-Zero story.

Expressions are written without spaces ("37+5-8+6"): under Qwen2's pre-tokenizer " 5" is two tokens (" ",
"5"), and the runs of identical " " tokens made copying the operands unreliable (measured: a third of the
worked solutions started from a miscopied question).

A problem is a number in `first` followed by `terms - 1` numbers in `rest`, joined by + or -; a minus is only
chosen when the running total stays >= 0, so every intermediate and final value is a non-negative integer.

Splits are decided by a hash of the canonical problem text, not by sampling order: `split_of(text)` is
"test" for 1/16 of all problems and "train" otherwise. Held-out problems have at least 3 numbers. The RL
train split draws "train" problems only, and the corpus keeps a document only if every chain of >= 3 numbers
in it (the question, and each rewritten step "34+2-3+1" of a worked solution) is a "train" problem, so
no held-out problem appears in the corpus, not even as an intermediate step (tests check it).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from .tasks import ProceduralRows, Task, register_task

TEST_BUCKETS = 1  # of 16 hash buckets; 1/16 of the problem space is held out
N_BUCKETS = 16


@dataclass(frozen=True)
class Problem:
    numbers: tuple[int, ...]
    ops: tuple[str, ...]  # len(numbers) - 1 operators, each "+" or "-"

    @property
    def expression(self) -> str:
        parts = [str(self.numbers[0])]
        for op, n in zip(self.ops, self.numbers[1:]):
            parts += [op, str(n)]
        return "".join(parts)

    def partials(self) -> list[int]:
        """Running totals after each operation: len(ops) values, the last is the answer."""
        total, out = self.numbers[0], []
        for op, n in zip(self.ops, self.numbers[1:]):
            total = total + n if op == "+" else total - n
            out.append(total)
        return out

    @property
    def answer(self) -> int:
        return self.partials()[-1]


CHAIN = re.compile(r"(?<!\d)\d+(?:[+-]\d+){2,}(?![+-]?\d)")  # a maximal chain of >= 3 numbers


def chains_in(text: str) -> list[str]:
    """Every maximal "a + b - c ..." chain of >= 3 numbers in `text` (the things that could be problems)."""
    return CHAIN.findall(text)


def split_of(expression: str) -> str:
    """'test' or 'train', a pure function of the canonical expression text (stable across runs/platforms)."""
    bucket = int.from_bytes(hashlib.sha256(expression.encode()).digest()[:4], "big") % N_BUCKETS
    return "test" if bucket < TEST_BUCKETS else "train"


FIRST = (10, 99)  # range of the first number
REST = (1, 9)  # range of the others


def sample_problem(rng: random.Random, min_terms: int = 3, max_terms: int = 5) -> Problem:
    n = rng.randint(min_terms, max_terms)
    numbers = [rng.randint(*FIRST)]
    ops, total = [], numbers[0]
    for _ in range(n - 1):
        b = rng.randint(*REST)
        op = "-" if (b <= total and rng.random() < 0.5) else "+"
        total = total + b if op == "+" else total - b
        numbers.append(b)
        ops.append(op)
    return Problem(tuple(numbers), tuple(ops))


def sample_split(rng: random.Random, split: str, **kw) -> Problem:
    """A problem of `split` ('train' | 'test'): rejection-sample until the hash bucket matches."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid: train, test")
    while True:
        p = sample_problem(rng, **kw)
        if split_of(p.expression) == split:
            return p


# ---- the RL task ------------------------------------------------------------------------------------------------
# Rows: {"question": "Compute 37+5-8+6", "answer": "40", "terms": 4}, verified by the "exact" reward (the <answer>
# block must equal the integer). Row i of a split is the first problem drawn from
# Random(f"chain:{seed}:{split}:{i}:{attempt}") whose hash bucket (split_of) is that split, so train and test are
# disjoint by construction, and the pretraining corpus (which only draws "train" problems) never holds a test one.
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
        if not 3 <= min_terms <= max_terms:  # held-out problems have >= 3 numbers (see above)
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
