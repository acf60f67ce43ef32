"""Host-side work between the GPU phases of a GRPO step, before and after the fast paths: the reflection and
revision rates over the step's completions (RolloutMaker.metrics) and decoding their final texts at the end
of generation (Tracker.completion per completion vs stops.completions, one batch decode).

    python benchmarks/host_metrics.py [--n 64] [--chars 16000] [--tokens 4096] [--repeats 7] [--tokenizer DIR]

Texts, --n of each kind:
  prose   ~--chars characters of random words, numbers and arithmetic ("12 + 7 = 19", "3 × 4 = 12", some
          results given twice with a different value), a re-checking phrase in one in four, a correction in
          one in eight;
  tokens  --tokens random token ids decoded with the tokenizer (the texts of the H200 cProfile run).
Tokenizer: the shipped tiny-base byte-level BPE (908 ids) unless --tokenizer names a local tokenizer directory
(a Qwen2.5 checkpoint, say); nothing is downloaded. "old" is the code before the fast paths, copied below as
the reference: the IGNORECASE regexes over the whole text, result_revisions with Fraction, and one
tokenizer.decode per completion. Every row first checks that old and new give identical outputs. Prints a
markdown table of medians over --repeats runs, in milliseconds for all --n texts.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import time
from fractions import Fraction
from importlib.resources import files

from aha.eval.reflection import (
    CORRECTION_PATTERNS,
    DEFAULT_PHRASES,
    compile_phrases,
    reflection_rate,
    result_revisions,
    revision_rate,
)
from aha.rollout import SamplingParams
from aha.rollout.stops import Tracker, completions

# ---------------------------------------------------------------- reference: the code before the fast paths

OLD_PHRASES = compile_phrases(DEFAULT_PHRASES)
OLD_CORRECTION = re.compile("|".join(f"(?:{p})" for p in CORRECTION_PATTERNS), re.IGNORECASE)
OLD_RESULT = re.compile(
    r"(?<![<>!=])=(?!=)\s*(-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?)(?!\d|\.\d|\s*[-+*/×÷^(])"
)
OLD_HAS_OP = re.compile(r"\d[\s)]*[-+*/×÷^][\s(]*-?\d")
EXPR_CHARS = set("0123456789.() \t+-*/×÷^")


def old_reflection_rate(texts):
    return sum(OLD_PHRASES.search(t or "") is not None for t in texts) / len(texts)


def old_expression_before(text, end):
    start = end
    while start > 0 and end - start < 200 and text[start - 1] in EXPR_CHARS:
        if text[start - 1] == "." and not text[start : start + 1].isdigit():
            break
        start -= 1
    s = re.sub(r"\s+", "", text[start:end]).replace("×", "*").replace("÷", "/")
    s = s.lstrip("+-*/^)")
    while s.startswith("(") and s.count("(") > s.count(")"):
        s = s[1:]
    return s if OLD_HAS_OP.search(s) else None


def old_as_fraction(s):
    try:
        return Fraction(re.sub(r"\s+", "", s))
    except (ValueError, ZeroDivisionError):
        return None


def old_result_revisions(text):
    first, out = {}, []
    text = (text or "")[:200_000]
    for m in OLD_RESULT.finditer(text):
        expr = old_expression_before(text, m.start())
        val = old_as_fraction(m.group(1))
        if expr is None or val is None:
            continue
        result = re.sub(r"\s+", "", m.group(1))
        if expr not in first:
            first[expr] = (result, val)
        elif first[expr][1] != val:
            out.append((expr, first[expr][0], result))
    return out


def old_has_revision(text):
    text = (text or "")[:200_000]
    return OLD_CORRECTION.search(text) is not None or bool(old_result_revisions(text))


def old_revision_rate(texts):
    return sum(old_has_revision(t) for t in texts) / len(texts)


# ---------------------------------------------------------------- inputs

WORDS = (
    "so we add the numbers then it is a sum of two and next compute carry total answer step".split()
)
REFLECT = ["Wait,", "let me check", "Let me verify", "on second thought", "I should double-check"]
CORRECT = ["Wait, no.", "No, wait:", "that's wrong.", "I made a mistake."]


def prose(rng: random.Random, chars: int, i: int) -> str:
    out, n = [], 0
    while n < chars:
        r = rng.random()
        if r < 0.12:
            a, b, op = rng.randint(1, 99), rng.randint(1, 99), rng.choice("+-×")
            c = a + b if op == "+" else a - b if op == "-" else a * b
            w = f"{a} {op} {b} = {c if rng.random() < 0.98 else c + 1}"
        elif r < 0.25:
            w = str(rng.randint(0, 10**6))
        else:
            w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    if i % 4 == 0:
        out.insert(rng.randrange(len(out)), rng.choice(REFLECT))
    if i % 8 == 1:
        out.insert(rng.randrange(len(out)), rng.choice(CORRECT))
    return " ".join(out)


def load(path: str | None):
    from aha.models.tokenizer import load_tokenizer

    return load_tokenizer(path or str(files("aha") / "assets" / "tiny-base"))


def trackers(tok, seqs: list[list[int]]) -> list[Tracker]:
    out = []
    for i, ids in enumerate(seqs):
        t = Tracker(i, SamplingParams(max_tokens=len(ids)), tok)
        t.push(ids, [0.0] * len(ids))
        out.append(t)
    return out


# ---------------------------------------------------------------- timing


def median_ms(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(runs)


def row(name: str, old, new, repeats: int) -> None:
    assert old() == new(), f"{name}: old and new differ"
    a, b = median_ms(old, repeats), median_ms(new, repeats)
    print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.1f}x |", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--chars", type=int, default=16_000)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--tokenizer", default=None, help="a local tokenizer directory (default tiny-base)"
    )
    args = ap.parse_args(argv)
    rng = random.Random(0)
    tok = load(args.tokenizer)
    seqs = [[rng.randrange(len(tok)) for _ in range(args.tokens)] for _ in range(args.n)]
    rng = random.Random(1)  # the same prose whatever the tokenizer
    texts = {
        "prose": [prose(rng, args.chars, i) for i in range(args.n)],
        "tokens": [tok.decode(s, skip_special_tokens=True) for s in seqs],
    }
    chars = {k: statistics.mean(map(len, v)) for k, v in texts.items()}
    print(
        f"{args.n} texts each: prose ~{chars['prose']:.0f} chars, tokens {args.tokens} ids of "
        f"{args.tokenizer or 'tiny-base'} ({len(tok)} ids) ~{chars['tokens']:.0f} chars; "
        f"{os.cpu_count()} CPUs; medians of {args.repeats}"
    )
    rates = ", ".join(
        f"{k}: reflection {reflection_rate(v):.2f}, revision {revision_rate(v):.2f}"
        for k, v in texts.items()
    )
    print(f"rates ({rates})")
    print("| step (all texts) | old ms | new ms | old / new |")
    print("|---|---|---|---|")
    for kind, ts in texts.items():
        row(
            f"reflection_rate, {kind}",
            lambda: old_reflection_rate(ts),
            lambda: reflection_rate(ts),
            args.repeats,
        )
        row(
            f"revision_rate, {kind}",
            lambda: old_revision_rate(ts),
            lambda: revision_rate(ts),
            args.repeats,
        )
        row(
            f"  of which result_revisions, {kind}",
            lambda: [old_result_revisions(t) for t in ts],
            lambda: [result_revisions(t) for t in ts],
            args.repeats,
        )
    done = trackers(tok, seqs)
    idx = list(range(args.n))
    row(
        f"completion texts, {args.n} x {args.tokens} ids",
        lambda: [t.completion(i) for t, i in zip(done, idx)],
        lambda: completions(done, idx),
        args.repeats,
    )


if __name__ == "__main__":
    main()
