"""Chain-arithmetic problems, the demo's task: "Compute 37+5-8+6" (answer 40).

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
