"""Reward throughput through the RewardRunner (the path the trainer uses), in completions per second.

    python benchmarks/rewards.py [--n 4000] [--workers 2]

Cases: short numeric math answers against GSM8K references (the fast path), LaTeX math answers that need
math-verify (sympy, in worker processes; groups of 8 samples share a reference, as in GRPO, so the reference
parse is cached), and countdown expressions. Each completion carries ~300 characters
of reasoning. Half of the answers are right. Prints one table; the first batch (worker start-up, sympy
import) is excluded from the timing.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from aha.rewards import RewardRunner


def reasoning(rng: random.Random) -> str:
    return " ".join(
        rng.choice(["so", "we", "add", "the", "numbers", "then", "check", "it"]) for _ in range(60)
    )


def math_numeric(n: int, rng: random.Random):
    comps, rows = [], []
    for _ in range(n):
        x = rng.randint(0, 100_000)
        pred = x if rng.random() < 0.5 else x + 1
        comps.append(f"<think>{reasoning(rng)}</think> <answer>{pred:,}</answer>")
        rows.append({"answer": f"Some worked solution.\n#### {x}"})
    return comps, rows


def math_latex(n: int, rng: random.Random, group: int = 8):
    """GRPO-shaped: groups of `group` samples share one reference (as in training); a right sample writes the
    answer in one of two equivalent forms, a wrong one perturbs it. No two groups share a reference."""
    comps, rows = [], []
    while len(comps) < n:
        a, b, c = rng.randint(2, 60), rng.choice([2, 3, 5, 6, 7]), rng.randint(2, 90)
        kind = rng.randrange(4)
        gold, right, wrong = [
            (
                f"\\sqrt{{{a * a * b}}}",
                [f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{b}}} \\cdot {a}"],
                f"{a + 1}\\sqrt{{{b}}}",
            ),
            (
                f"\\frac{{{a}\\pi}}{{{c}}}",
                [f"\\frac{{{2 * a}\\pi}}{{{2 * c}}}", f"\\frac{{{a}}}{{{c}}}\\pi"],
                f"\\frac{{{a}\\pi}}{{{c + 1}}}",
            ),
            (
                f"[{a},{a + c})",
                [f"[{a}, {a + c})", f"\\left[{a},{a + c}\\right)"],
                f"({a}, {a + c})",
            ),
            (
                f"({a}, \\frac{{1}}{{{c}}})",
                [f"\\left({a}, \\frac{{1}}{{{c}}}\\right)", f"({a},{1 / c})"],
                f"({a}, {c})",
            ),
        ][kind]
        for _ in range(group):
            pred = rng.choice(right) if rng.random() < 0.5 else wrong
            comps.append(f"<think>{reasoning(rng)}</think> <answer>{pred}</answer>")
            rows.append({"answer": f"so \\boxed{{{gold}}}"})
    return comps[:n], rows[:n]


def countdown(n: int, rng: random.Random):
    comps, rows = [], []
    for _ in range(n):
        a, b, c = (rng.randint(1, 99) for _ in range(3))
        target = (a + b) * c if rng.random() < 0.5 else a + b + c + 1
        comps.append(f"<think>{reasoning(rng)}</think> <answer>({a} + {b}) * {c}</answer>")
        rows.append({"numbers": [a, b, c], "target": target})
    return comps, rows


def bench(name: str, make, n: int, workers: int) -> None:
    rng = random.Random(0)
    comps, rows = make(n, rng)
    spec = "countdown" if name == "countdown" else "math"
    with RewardRunner([(spec, 1.0)], num_workers=workers, timeout=5.0) as runner:
        runner.score(comps[:64], rows[:64])  # start the workers, import sympy
        start = time.perf_counter()
        res = runner.score(comps, rows)
        dt = time.perf_counter() - start
    print(
        f"| {name:13s} | {n:6d} | {workers:7d} | {n / dt:12,.0f} | {res.metrics['reward/' + spec]:5.2f} | "
        f"{res.metrics['reward/timeouts']:8.0f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latex-n", type=int, default=1000)
    args = ap.parse_args()
    print(f"cpu cores visible: {os.cpu_count()}, workers: {args.workers}")
    print("| case          |      n | workers | completions/s |  mean | timeouts |")
    print("|---------------|--------|---------|---------------|-------|----------|")
    bench("math numeric", math_numeric, args.n, args.workers)
    bench("math latex", math_latex, args.latex_n, args.workers)
    bench("countdown", countdown, args.n, args.workers)


if __name__ == "__main__":
    main()
