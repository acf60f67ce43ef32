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

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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

# Matched case-insensitively. Written in lowercase, each starting with \b then a letter: _CORRECTIONS below
# searches them as written in text.lower(), with the \b checked by hand.
CORRECTION_PATTERNS: tuple[str, ...] = (
    r"\bwait\s*[,.!]*\s*(?:no|actually)\b",
    r"\bwait\b[^.!?\n]{0,60}?\bactually\b",
    r"\bno\s*[,.!]*\s*wait\b",
    r"\b(?:that|this|it)(?:'s|’s|\s+is|\s+was)\s+(?:wrong|incorrect|not\s+right)\b",
    r"\bi\s+made\s+(?:a\s+mistake|an\s+error)\b",
    r"\bmy\s+(?:mistake|error|bad)\b",
    r"\bcorrection\s*:",
)
_CORRECTION_RE = re.compile("|".join(f"(?:{p})" for p in CORRECTION_PATTERNS), re.IGNORECASE)

# ---------------------------------------------------------------- case-insensitive search, fast
# A search under re.IGNORECASE, or one that starts with (?<!\w) or \b, cannot use re's scan for a literal
# prefix: it tries the whole pattern at every character (~1.5 ms for 16,000 characters; see
# benchmarks/host_metrics.py). So each alternative is searched on its own, lowercase and without the flag,
# in text.lower(), starting with its literal, and the (?<!\w) in front is checked at each hit.
# That gives the same answer because, for an ASCII pattern character c (or ’), re.IGNORECASE matches exactly
# the characters whose .lower() is c.lower(), and .lower() maps every character to one character of the same
# \w and \s class, except for the three below (tests/test_eval_reflection.py checks this over all code
# points). A text holding one of them, or a non-ASCII phrase, is searched with the IGNORECASE regex itself.
_UNFOLDED = "\u0130\u0131\u017f"  # İ (lowers to 2 characters), ı (re: ~ i), ſ (re: ~ s)
_WORD = re.compile(r"\w")


def _after_nonword(pattern: re.Pattern, text: str) -> bool:
    r"""True iff (?<!\w) followed by `pattern` matches somewhere in `text`."""
    m = pattern.search(text)
    while m is not None:
        if m.start() == 0 or _WORD.match(text, m.start() - 1) is None:
            return True
        m = pattern.search(text, m.start() + 1)  # lookarounds still see text before pos
    return False


@dataclass(frozen=True)
class _Search:
    r"""`exact.search(text) is not None` for exact = (?<!\w)(?:A|B|...) under re.IGNORECASE, computed as
    "one of parts = (A, B, ...), lowercase and without the flag, matches text.lower() after a non-word
    character" where that is the same (see above)."""

    exact: re.Pattern
    parts: tuple[re.Pattern, ...] | None  # None: search with `exact` only

    def __call__(self, text: str) -> bool:
        text = text or ""
        if self.parts is None or any(c in text for c in _UNFOLDED):
            return self.exact.search(text) is not None
        low = text.lower()
        return any(_after_nonword(p, low) for p in self.parts)


# Each pattern is \b then a letter, and \b before a letter is (?<!\w): a part is the pattern without it.
_CORRECTIONS = _Search(
    _CORRECTION_RE, tuple(re.compile(p.removeprefix(r"\b")) for p in CORRECTION_PATTERNS)
)


def _phrase_source(phrase: str) -> str:
    return r"\s+".join(re.escape(w) for w in phrase.split())


def compile_phrases(phrases: Iterable[str] = DEFAULT_PHRASES) -> re.Pattern:
    """One case-insensitive regex matching any of `phrases` on word boundaries (see module docstring)."""
    parts = [_phrase_source(p) for p in phrases if p.strip()]
    if not parts:
        raise ValueError("reflection phrases are empty; give at least one phrase such as 'wait'")
    parts.sort(key=len, reverse=True)  # longest first, so a phrase is not shadowed by its prefix
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


@functools.lru_cache(maxsize=16)
def _phrase_search(phrases: tuple[str, ...]) -> _Search:
    r"""compile_phrases(phrases).search as a _Search: one part per phrase, `phrase(?!\w)` lowercased."""
    exact = compile_phrases(phrases)
    if not all(p.isascii() for p in phrases):
        return _Search(exact, None)
    return _Search(
        exact,
        tuple(re.compile(_phrase_source(p.lower()) + r"(?!\w)") for p in phrases if p.strip()),
    )


def _reflects(phrases) -> Callable[[str], bool]:
    if isinstance(phrases, re.Pattern):  # a caller's own regex: searched as given
        return lambda text: phrases.search(text or "") is not None
    return _phrase_search(DEFAULT_PHRASES if phrases is None else tuple(phrases))


def has_reflection(text: str, phrases: Iterable[str] | re.Pattern | None = None) -> bool:
    """True iff `text` contains a re-checking phrase (DEFAULT_PHRASES when `phrases` is None)."""
    return _reflects(phrases)(text)


def reflection_rate(
    texts: Sequence[str], phrases: Iterable[str] | re.Pattern | None = None
) -> float:
    """Fraction of `texts` that reflect; NaN for no texts."""
    if len(texts) == 0:
        return float("nan")
    reflects = _reflects(phrases)
    return sum(reflects(t) for t in texts) / len(texts)


_OPS = "+-*/×÷^"
_EXPR_CHARS = set("0123456789.() \t" + _OPS)
# "=" then a result that does not continue as an expression ("2+3 = 4+1" is not a result; "= 3.5." is).
# The "not after <, >, ! or =" test sits behind the "=" ((?<![<>!=]=), not (?<![<>!=]) in front) so that
# the pattern starts with a literal, which re scans for quickly (~3x faster on long texts).
_RESULT_RE = re.compile(
    r"=(?<![<>!=]=)(?!=)\s*(-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?)(?!\d|\.\d|\s*[-+*/×÷^(])"
)
_SPACES = re.compile(r"\s+")
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
    s = text[start:end].replace(" ", "").replace("\t", "")  # the only spaces in _EXPR_CHARS
    s = s.replace("×", "*").replace("÷", "/")
    s = s.lstrip("+-*/^)")  # a run may begin with the tail of earlier prose: "... - 3+4 ="
    while s.startswith("(") and s.count("(") > s.count(")"):
        s = s[1:]
    return s if _HAS_OP_RE.search(s) else None


def _as_number(s: str) -> int | Fraction | None:
    r"""The exact value of a result without spaces; an integer goes through int(), ~10x faster than
    Fraction's parser and the same value (both read any Unicode digit that \d matches)."""
    try:
        return int(s) if "." not in s and "/" not in s else Fraction(s)
    except (ValueError, ZeroDivisionError):  # "1.5/2", "3/0", more digits than int() takes
        return None


def result_revisions(text: str) -> list[tuple[str, str, str]]:
    """Rule (a): every (expression, earlier result, later result) where a later result of the same
    expression differs from the first one given."""
    first: dict[str, tuple[str, int | Fraction]] = {}
    out = []
    text = (text or "")[:_MAX_TEXT]
    for m in _RESULT_RE.finditer(text):
        expr = _expression_before(text, m.start())
        if expr is None:
            continue
        result = _SPACES.sub("", m.group(1))
        val = _as_number(result)
        if val is None:
            continue
        if expr not in first:
            first[expr] = (result, val)
        elif first[expr][1] != val:
            out.append((expr, first[expr][0], result))
    return out


def has_revision(text: str) -> bool:
    """True iff the completion revises an intermediate answer: rule (a) or rule (b) of the module docstring."""
    text = (text or "")[:_MAX_TEXT]
    return _CORRECTIONS(text) or bool(result_revisions(text))


def revision_rate(texts: Sequence[str]) -> float:
    """Fraction of `texts` that revise an intermediate answer; NaN for no texts."""
    if len(texts) == 0:
        return float("nan")
    return sum(has_revision(t) for t in texts) / len(texts)
