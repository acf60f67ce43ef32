"""Answer extraction under a scoring mode, strict or lenient, and any verifier scored under a mode.

    extract_answer(text, mode) -> str | None        mode in ANSWER_MODES
      "tags"         the R1 rule every reward uses: the last <answer>...</answer> block (inside it the last
                     balanced \\boxed{} when there is one), stripped. Strict: text outside the tags never counts.
      "boxed"        the last balanced \\boxed{...} (or \\fbox{...}) anywhere in the text, nested braces kept.
      "last-number"  the last number in the text, normalised as the verifiers' fast path reads numbers
                     (aha.rewards.math.simple_number): "1,234" / "1{,}234" / "1\\,234" -> "1234", "2.0" -> "2",
                     "1,234.50" -> "1234.50", "\\frac{2}{4}" / "2/4" -> "1/2". A number is digits with those
                     separators and an optional decimal part, or a simple fraction, with a leading "-" unless
                     it follows a digit or letter (so "10-3=7" ends in 7, not -7); "5, 100" is two numbers.
    answer_completion(text, mode) -> str           the completion rewritten as "<answer>{answer}</answer>" (""
                                                   when none), so that any verifier scores it under `mode`
    score_answer(verifier, completion, mode, **fields) -> float

Why lenient modes: an instruct or base model answers "The answer is 42." or "\\boxed{42}", which the strict
rule scores 0, so strict accuracy alone cannot show where a model starts before RL (issue 20). The lenient
modes are for evaluation beside the strict figure; training rewards keep the strict rule (a lenient reward is
easy to hack: "last-number" pays any completion that ends in the right number).

All functions are total: any input, a str/None/float out, linear time, no exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aha.rewards.format import extract_answer as _tagged_answer
from aha.rewards.format import last_boxed
from aha.rewards.math import simple_number

ANSWER_MODES = ("tags", "boxed", "last-number")
_SEP = re.compile(r",|\{,\}|\\,")  # the thousands separators simple_number accepts
_NUMBER = re.compile(
    r"(?:(?<![\w.)}])-)?"  # a sign, unless it is a minus between two terms ("10-3")
    r"(?:\\[dt]?frac\{-?\d+\}\{-?\d+\}"  # \frac{3}{4}
    r"|\d+/\d+(?![\d.])"  # 3/4
    r"|(?:[1-9]\d{0,2}(?:(?:,|\{,\}|\\,)\d{3})+|\d+)(?:\.\d+)?(?!\d)"  # 1,234.5  1234  0.5
    r"|\.\d+)"  # .5
)


def _canonical(number: str) -> str | None:
    """A matched number as the verifiers read it (None if it is not one, e.g. 1/0): an integer as such,
    a decimal without separators, a fraction reduced ("2/4" -> "1/2")."""
    value = simple_number(number)
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    if "/" in number or "frac" in number:
        return f"{value.numerator}/{value.denominator}"
    return _SEP.sub("", number)


def last_number(text: str) -> str | None:
    """The last number in `text`, normalised (module docstring); None when there is none."""
    if not isinstance(text, str):
        return None
    for m in reversed(list(_NUMBER.finditer(text))):
        value = _canonical(m[0])
        if value is not None:
            return value
    return None


def check_mode(mode: str) -> str:
    """`mode` if it is one of ANSWER_MODES, else ValueError naming the valid ones."""
    if mode not in ANSWER_MODES:
        raise ValueError(f"unknown answer mode {mode!r}; valid: {', '.join(ANSWER_MODES)}")
    return mode


def extract_answer(text: str, mode: str = "tags") -> str | None:
    """The answer of `text` under `mode` (module docstring); None when there is none. An unknown mode is a
    caller's mistake (ValueError), never the model's."""
    check_mode(mode)
    if not isinstance(text, str):
        return None
    if mode == "tags":
        return _tagged_answer(text)
    if mode == "boxed":
        boxed = last_boxed(text)
        return boxed.strip() if boxed is not None else None
    return last_number(text)


def answer_completion(text: str, mode: str = "tags") -> str:
    """`text` as a completion any verifier (math, countdown, exact, a user's) scores under `mode`: the text
    itself for "tags", else "<answer>{answer}</answer>", or "" when there is no answer (scores 0). An answer
    that itself holds an answer tag is dropped: it would change which block the verifier reads."""
    check_mode(mode)
    if not isinstance(text, str):
        return ""
    if mode == "tags":
        return text
    answer = extract_answer(text, mode)
    if answer is None or "<answer>" in answer or "</answer>" in answer:
        return ""
    return f"<answer>{answer}</answer>"


def score_answer(
    verifier: Callable[..., float], completion: str, mode: str = "tags", **fields
) -> float:
    """`verifier(completion, **fields)` (e.g. math_accuracy, answer="#### 42") with the answer read under
    `mode`. The verifier's exceptions are its own; the built-in ones are total."""
    return verifier(answer_completion(completion, mode), **fields)
