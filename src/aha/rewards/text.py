"""Small text rewards: exact match, R1's language-consistency reward, DAPO's soft overlong penalty.

language_consistency (R1, section 2.3.3): the fraction of the reasoning's words written in the target
language. A word is a maximal run of letters; its language is judged by script (Latin letters for "en" and
other Latin-script languages, CJK ideographs for "zh", and so on), which is what catches the language mixing
R1-Zero shows. CJK text has no spaces, so each ideograph/kana/hangul character counts as one word. Digits,
math and punctuation are language-neutral and not counted. No words at all -> 0.

soft_overlong_penalty (DAPO, eq. 13), with L the response length, L_max the limit and L_cache the soft band:

    R(L) = 0                              if L <= L_max - L_cache
         = ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max
         = -1                             if L > L_max
"""
from __future__ import annotations

import re
import unicodedata

from aha.rewards.format import extract_answer

_CJK = "[\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
# a word: one CJK character (no spaces in those scripts), or a run of other letters (any script)
_WORD = re.compile(f"{_CJK}|(?:(?!{_CJK})[^\\W\\d_])+")

# target language -> the Unicode-name prefixes of the letters that count as that language
SCRIPTS = {
    "en": ("LATIN",), "fr": ("LATIN",), "de": ("LATIN",), "es": ("LATIN",), "it": ("LATIN",),
    "pt": ("LATIN",), "zh": ("CJK",), "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL",),
    "ru": ("CYRILLIC",), "ar": ("ARABIC",), "el": ("GREEK",), "he": ("HEBREW",), "hi": ("DEVANAGARI",),
}


def exact_match(completion: str, answer) -> float:
    """1.0 iff the extracted answer equals str(answer) up to surrounding/repeated whitespace; else 0.0."""
    try:
        pred = extract_answer(completion)
        if pred is None:
            return 0.0
        gold = " ".join(str(answer).split())
        return 1.0 if gold and " ".join(pred.split()) == gold else 0.0
    except Exception:
        return 0.0


def _reasoning(completion: str) -> str:
    """The think block: after <think> (if present) up to </think>, else up to <answer>, else everything."""
    text = completion
    if "<think>" in text:
        text = text.split("<think>", 1)[1]
    for end in ("</think>", "<answer>"):
        if end in text:
            return text.split(end, 1)[0]
    return text


def _script(ch: str) -> str:
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]


def language_consistency(completion: str, lang: str = "en") -> float:
    """Fraction of the reasoning's words whose letters are all in `lang`'s script; 0.0 if no words or an
    unknown language (the valid codes are the keys of SCRIPTS)."""
    try:
        scripts = SCRIPTS.get(lang)
        if scripts is None:
            return 0.0
        words = _WORD.findall(_reasoning(completion))
        if not words:
            return 0.0
        ok = sum(all(_script(c) in scripts for c in w) for w in words)
        return ok / len(words)
    except Exception:
        return 0.0


def soft_overlong_penalty(length: int, max_len: int, cache_len: int) -> float:
    """DAPO eq. 13 (see module docstring): 0 when short enough, a linear ramp to -1 in the last `cache_len`
    tokens, -1 beyond `max_len`. `cache_len` <= 0 gives the hard step (0, then -1 beyond max_len)."""
    length, max_len, cache_len = float(length), float(max_len), float(cache_len)
    if length > max_len:
        return -1.0
    if cache_len <= 0 or length <= max_len - cache_len:
        return 0.0
    return (max_len - cache_len - length) / cache_len
