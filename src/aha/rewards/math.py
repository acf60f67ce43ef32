"""Math accuracy: is the completion's final answer mathematically equal to the reference?

    math_accuracy(completion, answer) = 1  iff  extract_answer(completion) == reference_answer(answer)

Reference forms: a GSM8K solution (the number after the last "####"), a MATH solution (the last balanced
\\boxed{...}), or a bare answer string. Equality is decided in two steps:

1. Fast path (no sympy, ~microseconds): when both sides are plain numbers -- integers, decimals, thousands
   separators ("1,234", "1{,}234", "1\\,234"; no other: "5, 100", "1 000" and "0,111" are not numbers here),
   "$"-signs, simple fractions "a/b" or \\frac{a}{b} -- they are compared exactly as Fractions. So "0.5" ==
   "\\frac{1}{2}" but 0.333333 != 1/3 here.
2. Otherwise math-verify (the verifier open-r1 and TRL use) parses both sides as LaTeX -- the predicted
   answer is wrapped in \\boxed{} so the *whole* answer is one expression: "1, 2, 3" is the set {1,2,3}
   and never matches 3, unlike math-verify's default last-number extraction -- and compares them
   symbolically/numerically (expressions, \\sqrt, \\pi, tuples, intervals, sets, equations).

Guards against answers that would hang sympy in C code (where no signal can interrupt it): answers longer than
MAX_ANSWER_CHARS, brace nesting deeper than MAX_BRACE_DEPTH, numeric power towers (9**9**9, 10^{10^{10}}),
exponents >= 10^5 and factorials of 4+ digit numbers score 0 before parsing. Legitimate answers of these
shapes (e.g. "2^{3^2}") are rejected too; that is deliberate. The runner's process timeout is the final bound
for anything the guards miss. math-verify's own signal timeouts are used only on a process's main thread
(signals cannot be set elsewhere).
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from functools import lru_cache

from aha.rewards.format import all_boxed, answer_block, extract_answer, last_boxed

MAX_ANSWER_CHARS = 300  # MATH-500 answers are <= 53 characters
MAX_BRACE_DEPTH = 12  # MATH-500 answers nest <= 2 deep; deep nests make sympy crawl
VERIFY_TIMEOUT_S = 3  # math-verify's signal.alarm timeout (whole seconds), main thread only

# Thousands groups only after a non-zero lead group ("0,111" is not 111); a "," is a separator only when it
# is directly between digits (no space: "5, 100" is two numbers, never 5100).
_NUMBER = re.compile(r"[-+]?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_FRAC = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}|(-?\d+)/(-?\d+)")
_TOWER = re.compile(r"(?:\^|\*\*)\s*[{(]?\s*[-+]?[\d.]+\s*[})]?\s*(?:\^|\*\*)")
_BIG_EXP = re.compile(r"(?:\^|\*\*)\s*[{(]?\s*[-+]?\d{6,}")
_BIG_FACT = re.compile(r"\d{4,}\s*!|\\?factorial\s*[{(]\s*\d{4,}")


def reference_answer(answer) -> str | None:
    """The answer inside a reference: after the last '####' (GSM8K), else the last \\boxed{} (MATH), else
    the string itself; stripped. None for a non-string or empty reference."""
    if isinstance(answer, (int, float, Fraction)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        return None
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    else:
        boxed = last_boxed(answer)
        if boxed is not None:
            answer = boxed
    answer = answer.strip()
    return answer or None


def simple_number(text: str) -> Fraction | None:
    """The exact value of a plain number or simple fraction (see module docstring), else None."""
    s = text.strip()
    if len(s) > 64:
        return None
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s.strip("$").strip()
    # Only the listed separators join digits: "1{,}234" and "1\\,234" become "1,234"; any other space
    # inside (e.g. "5, 100", "1 000") leaves it not a plain number (issue 17, item 13).
    s = s.replace("\\$", "").replace("\\!", "").replace("{,}", ",").replace("\\,", ",")
    s = s.lstrip("$").strip().rstrip(".")
    if _NUMBER.fullmatch(s):
        return Fraction(s.replace(",", ""))
    m = _FRAC.fullmatch(s)
    if m:
        sign, num, den = (m[1], m[2], m[3]) if m[2] is not None else ("", m[4], m[5])
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign else value
    return None


def _too_hard(answer: str) -> bool:
    """True for answers that could make sympy compute for minutes in C (see module docstring)."""
    if len(answer) > MAX_ANSWER_CHARS:
        return True
    depth = 0
    for c in answer:
        if c in "{([":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return True
        elif c in "})]":
            depth -= 1
    return bool(_TOWER.search(answer) or _BIG_EXP.search(answer) or _BIG_FACT.search(answer))


def _signal_timeout() -> int | None:
    """math-verify's alarm timeout, or None off the main thread (signal.signal would raise there)."""
    return VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def _parse_latex(expr: str, timeout: int | None) -> tuple:
    from math_verify import LatexExtractionConfig, parse

    # \boxed{} around the whole answer: math-verify then parses all of it as one expression.
    return tuple(
        parse(
            "\\boxed{" + expr + "}",
            [LatexExtractionConfig(boxed_match_priority=0)],
            fallback_mode="no_fallback",
            parsing_timeout=timeout,
        )
    )


def _normalised(s: str) -> str:
    """The spelling-only differences of two answers removed, nothing that changes the value: spaces and LaTeX
    spacing, $, \\text{...} wrappers, and braces around a single character (2^{5} is 2^5, \\frac{1}{2} is
    \\frac12). Other braces stay: \\sqrt{5}1 is not \\sqrt{51}, nor \\frac{12}{3} \\frac{1}{23}."""
    s = re.sub(r"(?<=\d)\s+(?=\d)", "#", s)  # "1 2" must not become "12"
    s = re.sub(r"\s+|\\[,;!: ]|\$", "", s)
    s = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", s)
    return re.sub(r"(?<!\\)\{([^{}\\])\}", r"\1", s)


_ASSIGNED = re.compile(r"\s*[a-zA-Z]\s*=(?!=)\s*(.+)", re.S)
# A number followed by words only ("72 dollars", "34 students"): the number. Not when a word changes its value
# or reads as maths (math-verify would take "72 dollars" for a product of letters).
_WORDED = re.compile(r"\s*(\S+?)\s+((?:[A-Za-z]{3,}\s*)+)\.?\s*")
# words that change a number's value or read as maths
_NOT_UNITS = frozenset(
    "hundred thousand million billion trillion dozen squared cubed pi "
    "sqrt sin cos tan cot sec csc log exp inf infty mod frac".split()
)


def _value_of(answer: str) -> str:
    """ "x = 58,500" -> "58,500": the plain-number fast path reads the value assigned to one letter (the
    general path, math-verify, already takes x = 3 for 3, but not a thousands separator after it); and
    "72 dollars" -> "72" (a number and a unit or noun)."""
    m = _ASSIGNED.fullmatch(answer)
    if m:
        return m[1]
    m = _WORDED.fullmatch(answer)
    words = m[2].lower().split() if m else ()
    return (
        m[1] if m and simple_number(m[1]) is not None and _NOT_UNITS.isdisjoint(words) else answer
    )


# An answer block that repeats the prompt's own answer marker: verl's GSM8K prompt asks for "#### 72", its DAPO
# prompt for "Answer: 34", MATH solutions say "The final answer is 12". The marker is dropped (once, at the start).
_MARKER = re.compile(r"\s*(?:####|(?:the\s+)?(?:final\s+)?answer\s*(?:is\b\s*:?|:))\s*", re.I)


def _unmarked(answer: str) -> str:
    m = _MARKER.match(answer)
    rest = answer[m.end() :].strip() if m else ""
    return rest[:-1].rstrip() if rest.endswith(".") else rest or answer


def math_equal(pred: str, gold: str) -> bool:
    """Equality of two extracted answers (no tags, no '####'); total."""
    try:
        if not pred or not gold or _too_hard(pred):
            return False
        pn, gn = simple_number(_value_of(pred)), simple_number(_value_of(gold))
        if pn is not None and gn is not None:
            return pn == gn
        if _normalised(pred) == _normalised(gold):
            return True
        from math_verify import verify

        # its "Timeout during comparison" warning reached the console from every worker; a timeout is a 0 here
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        t = _signal_timeout()
        gold_parsed, pred_parsed = _parse_latex(gold, t), _parse_latex(pred, t)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=t))
    except Exception:  # math-verify's TimeoutException included: unparseable -> not equal
        return False


def math_accuracy(completion: str, answer) -> float:
    """1.0 iff the completion's extracted answer equals the reference `answer` mathematically; else 0.0.

    An answer block holding several distinct \\boxed{} answers is right when they are the gold's parts
    ("\\boxed{(2, 2)} and \\boxed{(6, 2)}" for the set of both) or every one of them equals it (one answer in
    two forms, "\\boxed{15\\frac{39}{40}} = \\boxed{\\frac{639}{40}}"); a hedge ("\\boxed{3} or \\boxed{5}")
    is wrong whichever is the gold (it scored as its last box before). A reference keeps its last box (MATH
    solutions box one answer in two forms). An answer marker at the start of the block ("#### 72", "Answer: 34",
    "The final answer is 12") is dropped. `answer` may be a list of right answers (any one scores)."""
    # several right answers (verl's list ground truths): any of them
    if isinstance(answer, (list, tuple)):
        return max((math_accuracy(completion, a) for a in answer), default=0.0)
    try:
        pred = extract_answer(completion)
        pred = pred and _unmarked(pred)
        gold = reference_answer(answer)
        if not pred or not gold:
            return 0.0
        boxes = all_boxed(answer_block(completion) or "")
        if len(boxes) > 1:
            whole = math_equal(", ".join(boxes), gold)
            return 1.0 if whole or all(math_equal(b, gold) for b in boxes) else 0.0
        return 1.0 if math_equal(pred, gold) else 0.0
    except Exception:
        return 0.0
