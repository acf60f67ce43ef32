"""Reflection statistics: how often completions re-check themselves, and how often they revise a result.

Two measures of the R1-Zero "aha moment" (paper, sec. 2.2.4: "Wait, wait. Wait. That's an aha moment..."):

1. Re-checking phrases. A completion *reflects* iff it contains at least one phrase of a configurable list
   (DEFAULT_PHRASES), matched case-insensitively on word boundaries: the phrase may not be preceded or followed
   by a letter, digit or underscore ("wait" matches "Wait," but not "awaits" or "waiting"), and a space inside
   a phrase matches any run of whitespace. `reflection_rate(texts)` is the fraction of texts that reflect.

2. Revisions. A completion *revises an intermediate answer* iff (a) or (b) holds:
   (a) Recomputed result: the same arithmetic expression is given two different numeric results, e.g.
       "12*3 = 38 ... 12 * 3 = 36". The expression is the run of at most 200 characters right before a "="
       (not "==", "<=", ">=", "!=") made only of digits, ".", parentheses, spaces and + - * / × ÷ ^, and it
       must hold an operator between two numbers; the result is the number right after the "=" (integer,
       decimal or a/b, optionally negative) when it does not continue as an expression (so in
       "2+3 = 4+1" nothing is a result). Expressions are compared with whitespace removed, "×" as "*" and
       "÷" as "/" (leading operators and unmatched "(" dropped); results are compared exactly as fractions
       ("0.5" == "1/2").
   (b) Explicit correction: a phrase of CORRECTION_PATTERNS, i.e. "wait, no" / "wait, actually" / "no, wait",
       "wait" followed by "actually" later in the same sentence (within 60 characters, no . ! ? or newline),
       "that's / that is / this is / it's wrong|incorrect|not right", "I made a mistake|an error",
       "my mistake|my error|my bad", or "correction:".
   (b) is an English heuristic; (a) is exact but only sees results written as "expression = number".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fractions import Fraction

__all__ = [
    "DEFAULT_PHRASES",
    "CORRECTION_PATTERNS",
    "compile_phrases",
    "has_reflection",
    "reflection_rate",
    "result_revisions",
    "has_revision",
    "revision_rate",
]

DEFAULT_PHRASES: tuple[str, ...] = (
    "wait",
    "let me check",
    "let me verify",
    "let me double-check",
    "verify",
    "recheck",
    "re-check",
    "check again",
    "double-check",
    "double check",
    "mistake",
    "re-evaluate",
    "reevaluate",
    "reconsider",
    "on second thought",
    "let me try again",
)

CORRECTION_PATTERNS: tuple[str, ...] = (
    r"\bwait\s*[,.!]*\s*(?:no|actually)\b",
    r"\bwait\b[^.!?\n]{0,60}?\bactually\b",
    r"\bno\s*[,.!]*\s*wait\b",
    r"\b(?:that|this|it)(?:'s|’s|\s+is|\s+was)\s+(?:wrong|incorrect|not\s+right)\b",
    r"\bI\s+made\s+(?:a\s+mistake|an\s+error)\b",
    r"\bmy\s+(?:mistake|error|bad)\b",
    r"\bcorrection\s*:",
)
_CORRECTION_RE = re.compile("|".join(f"(?:{p})" for p in CORRECTION_PATTERNS), re.IGNORECASE)


def compile_phrases(phrases: Iterable[str] = DEFAULT_PHRASES) -> re.Pattern:
    """One case-insensitive regex matching any of `phrases` on word boundaries (see module docstring)."""
    parts = [r"\s+".join(re.escape(w) for w in p.split()) for p in phrases if p.strip()]
    if not parts:
        raise ValueError("reflection phrases are empty; give at least one phrase such as 'wait'")
    parts.sort(key=len, reverse=True)  # longest first, so a phrase is not shadowed by its prefix
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


_DEFAULT_RE = compile_phrases(DEFAULT_PHRASES)


def _pattern(phrases) -> re.Pattern:
    if phrases is None:
        return _DEFAULT_RE
    return phrases if isinstance(phrases, re.Pattern) else compile_phrases(phrases)


def has_reflection(text: str, phrases: Iterable[str] | re.Pattern | None = None) -> bool:
    """True iff `text` contains a re-checking phrase (DEFAULT_PHRASES when `phrases` is None)."""
    return _pattern(phrases).search(text or "") is not None


def reflection_rate(
    texts: Sequence[str], phrases: Iterable[str] | re.Pattern | None = None
) -> float:
    """Fraction of `texts` that reflect; NaN for no texts."""
    if len(texts) == 0:
        return float("nan")
    pat = _pattern(phrases)
    return sum(pat.search(t or "") is not None for t in texts) / len(texts)


_OPS = "+-*/×÷^"
_EXPR_CHARS = set("0123456789.() \t" + _OPS)
# "=" then a result that does not continue as an expression ("2+3 = 4+1" is not a result; "= 3.5." is).
_RESULT_RE = re.compile(
    r"(?<![<>!=])=(?!=)\s*(-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?)(?!\d|\.\d|\s*[-+*/×÷^(])"
)
_HAS_OP_RE = re.compile(r"\d[\s)]*[-+*/×÷^][\s(]*-?\d")
_MAX_TEXT = 200_000  # bound the work on pathological completions
_MAX_EXPR = 200


def _expression_before(text: str, end: int) -> str | None:
    """The arithmetic expression that ends at text[end] (exclusive), normalised, or None if there is none."""
    start = end
    while start > 0 and end - start < _MAX_EXPR and text[start - 1] in _EXPR_CHARS:
        if text[start - 1] == "." and not text[start : start + 1].isdigit():
            break  # a full stop ends the sentence before; a decimal point has a digit
        start -= 1
    s = re.sub(r"\s+", "", text[start:end]).replace("×", "*").replace("÷", "/")
    s = s.lstrip("+-*/^)")  # a run may begin with the tail of earlier prose: "... - 3+4 ="
    while s.startswith("(") and s.count("(") > s.count(")"):
        s = s[1:]
    return s if _HAS_OP_RE.search(s) else None


def _as_fraction(s: str) -> Fraction | None:
    try:
        return Fraction(re.sub(r"\s+", "", s))
    except (ValueError, ZeroDivisionError):
        return None


def result_revisions(text: str) -> list[tuple[str, str, str]]:
    """Rule (a): every (expression, earlier result, later result) where a later result of the same
    expression differs from the first one given."""
    first: dict[str, tuple[str, Fraction]] = {}
    out = []
    text = (text or "")[:_MAX_TEXT]
    for m in _RESULT_RE.finditer(text):
        expr = _expression_before(text, m.start())
        val = _as_fraction(m.group(1))
        if expr is None or val is None:
            continue
        result = re.sub(r"\s+", "", m.group(1))
        if expr not in first:
            first[expr] = (result, val)
        elif first[expr][1] != val:
            out.append((expr, first[expr][0], result))
    return out


def has_revision(text: str) -> bool:
    """True iff the completion revises an intermediate answer: rule (a) or rule (b) of the module docstring."""
    text = (text or "")[:_MAX_TEXT]
    return _CORRECTION_RE.search(text) is not None or bool(result_revisions(text))


def revision_rate(texts: Sequence[str]) -> float:
    """Fraction of `texts` that revise an intermediate answer; NaN for no texts."""
    if len(texts) == 0:
        return float("nan")
    return sum(has_revision(t) for t in texts) / len(texts)
