"""Small text rewards: exact match, R1's language-consistency reward, DAPO's soft overlong penalty.

language_consistency (R1, section 2.3.3): the fraction of the reasoning's words written in the target
language. A word is a maximal run of letters; its language is judged by script (Latin letters for "en" and
other Latin-script languages, CJK ideographs for "zh", and so on; see SCRIPTS), which is what catches the
language mixing R1-Zero shows. CJK text has no spaces, so each ideograph/kana/hangul character counts as one word. Digits,
math and punctuation are language-neutral and not counted. No words at all -> 0.

soft_overlong_penalty (DAPO, eq. 13), with L the response length, L_max the limit and L_cache the soft band:

    R(L) = 0                                if L <= L_max - L_cache
         = ((L_max - L_cache) - L) / L_cache  if L_max - L_cache < L <= L_max
         = -1                               if L > L_max
"""

from __future__ import annotations

import re

from aha.rewards.format import extract_answer


def is_messages(value) -> bool:
    """A chat message list ([{"role": ..., "content": ...}, ...]): a conversational prompt (TRL's format)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m for m in value)
    )


_CJK = "[\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
# a word: one CJK character (no spaces in those scripts), or a run of other letters (any script)
_WORD = re.compile(f"{_CJK}|(?:(?!{_CJK})[^\\W\\d_])+")

_LATIN = "A-Za-z\u00aa\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\u2c60-\u2c7f\ua720-\ua7ff"
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# target language -> the letters (character ranges) that count as that language; matched with C-speed regexes
SCRIPTS = {
    **{lang: _LATIN for lang in ("en", "fr", "de", "es", "it", "pt", "nl", "id", "vi", "tr")},
    "zh": _HAN,
    "ja": _HAN + "\u3040-\u30ff",
    "ko": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
    "ru": "\u0400-\u052f",
    "uk": "\u0400-\u052f",
    "ar": "\u0600-\u06ff\u0750-\u077f",
    "el": "\u0370-\u03ff\u1f00-\u1fff",
    "he": "\u0590-\u05ff",
    "hi": "\u0900-\u097f",
}
_IN_LANG = {lang: re.compile(f"[{chars}]+") for lang, chars in SCRIPTS.items()}


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


def reasoning_of(completion: str) -> str:
    """The think block: after <think> (if present) up to </think>, else up to <answer>, else everything."""
    text = completion
    if "<think>" in text:
        text = text.split("<think>", 1)[1]
    for end in ("</think>", "<answer>"):
        if end in text:
            return text.split(end, 1)[0]
    return text


def language_consistency(completion: str, lang: str = "en") -> float:
    """Fraction of the reasoning's words whose letters are all in `lang`'s script; 0.0 if no words or an
    unknown language (the valid codes are the keys of SCRIPTS)."""
    try:
        in_lang = _IN_LANG.get(lang)
        if in_lang is None:
            return 0.0
        words = _WORD.findall(reasoning_of(completion))
        if not words:
            return 0.0
        return sum(in_lang.fullmatch(w) is not None for w in words) / len(words)
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
