"""The selection of `aha sample`, pure: one prompt's k samples -> the kept ones and why the others were dropped.

Per completion, in this order (the first failing check is the reason counted): truncated, wrong (verifier reward
below min_reward or not applicable), format, readability (mixed language, a long paragraph, a code fence); then
per prompt: duplicates dropped and at most m kept (the first, or the shortest).
"""

from __future__ import annotations

import re

import numpy as np

from ..rewards.text import reasoning_of
from .config import FilterConfig, SampleConfig


def readability(text: str, f: FilterConfig) -> tuple[str | None, float | None]:
    """(reason the text is rejected or None, language consistency or None when not measured)."""
    lang = None
    if f.language:
        from ..rewards import language_consistency

        reasoning = reasoning_of(text)
        if any(ch.isalpha() for ch in reasoning):  # digits and symbols only: nothing to judge
            lang = language_consistency(text, f.language)
            if lang < f.min_language:
                return "language", lang
    if f.max_paragraph_chars and any(
        len(p) > f.max_paragraph_chars for p in re.split(r"\n\s*\n", text)
    ):
        return "long_paragraph", lang
    if f.no_code_blocks and "```" in text:
        return "code_block", lang
    return None, lang


def select(
    texts: list[str],
    truncated: list[bool],
    reward: np.ndarray,
    fmt: np.ndarray,
    cfg: SampleConfig,
    lengths: list[int],
) -> tuple[list[int], dict, list[float | None]]:
    """One prompt's k samples -> (kept indices, rejection counts, language scores). reward/fmt: (k,), NaN = n/a."""
    counts = {
        "truncated": 0,
        "wrong": 0,
        "format": 0,
        "language": 0,
        "long_paragraph": 0,
        "code_block": 0,
        "duplicate": 0,
        "over_m": 0,
    }
    ok, seen, langs = [], set(), []
    for j, text in enumerate(texts):
        reason, lang = None, None
        if cfg.filters.drop_truncated and truncated[j]:
            reason = "truncated"
        elif not (np.isfinite(reward[j]) and reward[j] >= cfg.min_reward):
            reason = "wrong"
        elif cfg.filters.require_format and not (np.isfinite(fmt[j]) and fmt[j] >= 1.0):
            reason = "format"
        else:
            reason, lang = readability(text, cfg.filters)
        langs.append(lang)
        key = " ".join(text.split())
        if reason is None and cfg.dedupe and key in seen:
            reason = "duplicate"
        if reason is not None:
            counts[reason] += 1
            continue
        seen.add(key)
        ok.append(j)
    if cfg.prefer == "shortest":
        ok.sort(key=lambda j: (lengths[j], j))
    if cfg.m and len(ok) > cfg.m:
        counts["over_m"] += len(ok) - cfg.m
        ok = sorted(ok[: cfg.m])
    return ok, counts, langs
