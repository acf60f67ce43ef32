"""Cold-start rows for R1: worked solutions in the R1 format, written by a program from *train* rows only.

    rows = cold_start_rows(get_task("arithmetic", ops=["+"], digits=[1, 2]), n=1000, seed=0)
    # [{"question": "What is 47 + 38?", "completion": "<think> ... </think> <answer> 85 </answer>",
    #   "answer": "85"}, ...]

R1 starts its RL from a model fine-tuned on "a few thousand" long, readable chain-of-thought examples
(section 2.3.1). A real pretrained model too weak to find the R1 format by itself (R1-Zero then gets no reward
signal at all) learns it from these rows. Each completion is `<think> STEPS </think> <answer> ANSWER </answer>`:

- arithmetic: column addition (digits, carries) or long multiplication (one partial product per digit);
- chain (the demo's task): the running value, one operation at a time;
- countdown: the generating expression of the row, evaluated step by step;
- gsm8k: the row's own worked solution (GSM8K's train split is written by people; its `<<a*b=c>>`
  calculator annotations are removed) and its `#### N` answer.

Every row is checked with the task's verifier before it is kept, and only `split="train"` rows are read, so
the held-out split never leaks into the cold start (procedural tasks cannot overlap by construction).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["SOLVERS", "cold_start_rows", "worked_solution"]

R1_FORMAT = "<think> {steps} </think> <answer> {answer} </answer>"


def _digits_sum(a: int, b: int) -> str:
    """Column addition of a + b, right to left: "7 + 8 = 15, write 5 carry 1; 4 + 3 + 1 = 8"."""
    steps, carry, i = [], 0, 0
    da, db = str(a)[::-1], str(b)[::-1]
    while i < max(len(da), len(db)):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        total = x + y + carry
        terms = f"{x} + {y}" + (f" + {carry}" if carry else "")
        carry, digit = divmod(total, 10)
        steps.append(
            f"{terms} = {total}, write {digit}" + (f" carry {carry}" if carry else "")
            if total >= 10
            else f"{terms} = {total}"
        )
        i += 1
    if carry:
        steps.append(f"then the carry {carry}")
    return "; ".join(steps)


def _arithmetic(row: dict) -> tuple[str, str] | None:
    m = re.fullmatch(r"What is (\d+) ([+*]) (\d+)\?", row.get("question", "").strip())
    if not m:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    if op == "+":
        result = a + b
        steps = f"{a} + {b}: {_digits_sum(a, b)}. So {a} + {b} = {result}."
    else:
        result = a * b
        parts = []
        for place, d in enumerate(reversed(str(b))):
            if d != "0":
                parts.append((int(d) * 10**place, a * int(d) * 10**place))
        if len(parts) <= 1:
            steps = f"{a} * {b} = {result}."
        else:
            each = "; ".join(f"{a} * {m_} = {p}" for m_, p in parts)
            total = " + ".join(str(p) for _, p in parts)
            steps = f"{a} * {b}: split {b} by place value. {each}. Add: {total} = {result}."
    return steps, str(result)


def _chain(row: dict) -> tuple[str, str] | None:
    m = re.fullmatch(r"Compute ([0-9+\-]+)", row.get("question", "").strip())
    if not m:
        return None
    tokens = re.findall(r"[+-]?\d+", m.group(1))
    value, rest, states = int(tokens[0]), tokens[1:], [m.group(1)]
    for i, t in enumerate(rest):
        value += int(t)
        states.append(str(value) + "".join(rest[i + 1 :]))
    return " = ".join(states), str(value)


def _countdown(row: dict) -> tuple[str, str] | None:
    """The row's generating expression, reduced one parenthesised group at a time."""
    from aha.rewards.countdown import evaluate  # exact (Fraction) parser of + - * / and parentheses

    expr = row.get("solution")
    if not isinstance(expr, str):
        return None
    try:
        value = evaluate(expr)[0]
    except Exception:  # not an arithmetic expression: no worked solution
        return None
    if value.denominator != 1:
        return None
    states, cur = [expr], expr
    while m := re.search(r"\(([^()]+)\)", cur):
        inner = evaluate(m.group(1))[0]
        cur = (
            cur[: m.start()]
            + (str(inner.numerator) if inner.denominator == 1 else str(inner))
            + cur[m.end() :]
        )
        states.append(cur)
    if cur != str(value.numerator):
        states.append(str(value.numerator))
    steps = (
        f"Use the numbers {row.get('numbers')} to reach {row.get('target')}. "
        f"Try {expr}: {' = '.join(states)}. That is the target."
    )
    return steps, expr


def _gsm8k(row: dict) -> tuple[str, str] | None:
    text = row.get("answer")
    if not isinstance(text, str) or "####" not in text:
        return None
    work, _, answer = text.rpartition("####")
    work = re.sub(r"<<[^>]*>>", "", work).strip()
    work = re.sub(r"\s*\n\s*", " ", work)
    answer = answer.strip().replace(",", "")
    return (work, answer) if work and answer else None


SOLVERS: dict[str, Callable[[dict], tuple[str, str] | None]] = {
    "arithmetic": _arithmetic,
    "chain": _chain,
    "countdown": _countdown,
    "gsm8k": _gsm8k,
}


def worked_solution(task_name: str, row: dict) -> str | None:
    """The R1-format completion for `row` of task `task_name`, or None when the row cannot be solved."""
    solver = SOLVERS.get(task_name)
    if solver is None:
        raise ValueError(
            f"no cold-start writer for task {task_name!r}; tasks with one: {', '.join(SOLVERS)}"
        )
    got = solver(row)
    return None if got is None else R1_FORMAT.format(steps=got[0], answer=got[1])


def cold_start_rows(task, n: int, *, start: int = 0, verify: bool = True) -> list[dict]:
    """Up to `n` verified {question, completion, answer} rows from the task's train split, from row `start`.

    `verify` scores each completion with the task's own accuracy reward and keeps only those it accepts.
    """
    import inspect

    from aha.rewards import get_reward

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rows = task.dataset("train")
    reward = get_reward(task.accuracy_reward) if verify else None
    fields = list(inspect.signature(reward).parameters)[1:] if reward else []
    out: list[dict] = []
    for i in range(start, len(rows)):
        if len(out) == n:
            break
        row = rows[i]
        completion = worked_solution(task.name, row)
        if completion is None:
            continue
        if (
            reward is not None
            and reward(completion, **{k: row[k] for k in fields if k in row}) != 1
        ):
            continue
        answer = completion.rsplit("<answer>", 1)[1].split("</answer>")[0].strip()
        out.append({"question": row["question"], "completion": completion, "answer": answer})
    return out
