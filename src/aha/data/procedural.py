"""Procedural tasks: countdown (TinyZero) and multi-digit arithmetic.

Countdown: given 3-4 numbers and a target, write an expression over + - * / using each number once that equals
the target. Problems are built backwards (pick the numbers, combine them in a random order with random
operators, keep the result when it is an integer in [1, max_target]), so every problem has a solution; the
generating expression is kept in the row as "solution". Verified by the "countdown" reward.

Arithmetic: "What is a <op> b?" for operands of a given number of digits, op in {+, *}. Verified by "math"
(so "1,234" and "1234" both count).

Row fields -- countdown: question, numbers, target, solution; arithmetic: question, answer.
"""

from __future__ import annotations

import random
from fractions import Fraction

from aha.data.tasks import ProceduralRows, Task, check_split, register_task

COUNTDOWN_QUESTION = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once."
)


def _countdown_problem(
    rng: random.Random, counts: tuple[int, ...], max_number: int, max_target: int
):
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(rng.choice(counts))]
        # combine a random permutation left to right with random operators, parenthesising as we go
        order = rng.sample(numbers, len(numbers))
        value, expr = Fraction(order[0]), str(order[0])
        for x in order[1:]:
            op = rng.choice("+-*/")
            value = {"+": value + x, "-": value - x, "*": value * x, "/": value / x}[op]
            expr = f"({expr} {op} {x})" if op in "+-" else f"{expr} {op} {x}"
        if value.denominator == 1 and 1 <= value <= max_target:
            return numbers, int(value), expr


@register_task("countdown")
class CountdownTask(Task):
    accuracy_reward = "countdown"

    def __init__(
        self,
        *,
        seed: int = 0,
        train_size: int = 100_000,
        test_size: int = 1_000,
        num_numbers: tuple[int, ...] = (3, 4),
        max_number: int = 99,
        max_target: int = 100,
        test_percent: int = 10,
    ):
        if any(c < 2 for c in num_numbers) or not num_numbers:
            raise ValueError(f"num_numbers must be counts >= 2, got {num_numbers}")
        self.name, self.seed, self.sizes = (
            "countdown",
            seed,
            {"train": train_size, "test": test_size},
        )
        self.counts, self.max_number, self.max_target = tuple(num_numbers), max_number, max_target
        self.test_percent = test_percent

    def _make(self, rng: random.Random):
        numbers, target, expr = _countdown_problem(
            rng, self.counts, self.max_number, self.max_target
        )
        question = COUNTDOWN_QUESTION.format(numbers=numbers, target=target)
        key = f"countdown:{sorted(numbers)}:{target}"  # order of the numbers does not make a new problem
        return key, {"question": question, "numbers": numbers, "target": target, "solution": expr}

    def dataset(self, split: str) -> ProceduralRows:
        check_split(split)
        return ProceduralRows(
            self._make, split, self.sizes[split], f"countdown:{self.seed}", self.test_percent
        )


@register_task("arithmetic")
class ArithmeticTask(Task):
    accuracy_reward = "math"

    def __init__(
        self,
        *,
        seed: int = 0,
        train_size: int = 100_000,
        test_size: int = 1_000,
        ops: tuple[str, ...] = ("+", "*"),
        digits: tuple[int, int] = (2, 4),
        test_percent: int = 10,
    ):
        bad = [op for op in ops if op not in ("+", "*")]
        if bad or not ops:
            raise ValueError(f"arithmetic ops must be among '+', '*', got {list(ops)}")
        if not 1 <= digits[0] <= digits[1]:
            raise ValueError(f"digits must be (min, max) with 1 <= min <= max, got {digits}")
        self.name, self.seed, self.sizes = (
            "arithmetic",
            seed,
            {"train": train_size, "test": test_size},
        )
        self.ops, self.digits, self.test_percent = tuple(ops), tuple(digits), test_percent

    def _make(self, rng: random.Random):
        op = rng.choice(self.ops)
        a, b = (
            rng.randint(10 ** (d - 1) if d > 1 else 0, 10**d - 1)
            for d in (rng.randint(*self.digits), rng.randint(*self.digits))
        )
        answer = a + b if op == "+" else a * b
        key = f"arithmetic:{op}:{min(a, b)}:{max(a, b)}"  # a+b and b+a are one problem
        return key, {"question": f"What is {a} {op} {b}?", "answer": str(answer)}

    def dataset(self, split: str) -> ProceduralRows:
        check_split(split)
        return ProceduralRows(
            self._make, split, self.sizes[split], f"arithmetic:{self.seed}", self.test_percent
        )
