"""The fast reflection and revision search against the definition, on random texts and edge cases.

The references are the functions as they were before the fast path (commit 0c27fa4): the IGNORECASE regexes
searched over the whole text, and result_revisions with Fraction values. The fast path searches text.lower()
without IGNORECASE; test_lowering_is_exact_outside_unfolded checks the premise of that over all code points.
"""

import random
import re
import sys
from pathlib import Path

import pytest

from aha.eval import reflection
from aha.eval.reflection import (
    CORRECTION_PATTERNS,
    DEFAULT_PHRASES,
    compile_phrases,
    has_reflection,
    has_revision,
    reflection_rate,
    result_revisions,
    revision_rate,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import host_metrics  # noqa: E402  (a benchmark script: the functions before the fast path, as its reference)

# ---------------------------------------------------------------- the references


def ref_has_reflection(text, phrases=None):
    pat = (
        phrases if isinstance(phrases, re.Pattern) else compile_phrases(phrases or DEFAULT_PHRASES)
    )
    return pat.search(text or "") is not None


# result_revisions and has_revision as they were: benchmarks/host_metrics.py keeps them (its "old" side)
ref_result_revisions, ref_has_revision = (
    host_metrics.old_result_revisions,
    host_metrics.old_has_revision,
)


# ---------------------------------------------------------------- random texts

FRAGMENTS = [  # "|" separates fragments
    # re-checking phrases, spaced and cased variants, near misses
    *DEFAULT_PHRASES,
    *"Wait,|WAIT|awaits|waiting|wait_|_wait|2wait|wait2|éwait|waité|Let me\n\tcheck".split("|"),
    *"let  me verify|double-checking|verified|mistakes|rechecked|On Second\nThought".split("|"),
    *"on second|check  again|re-evaluated|reconsidering|let me try".split("|"),
    # corrections and near misses
    *"wait, no|Wait... actually|wait! no|wait,no|no, wait|No!! Wait".split("|"),
    *"wait for it, actually|wait. actually|that's wrong|That’s incorrect".split("|"),
    *"this is not right|it was wrong|I made".split("|"),
    *"it's   not  right|I made a mistake|i made an error|my mistake|my bad|My Error".split("|"),
    *"correction:|Correction :|correction|not wrong|mybad".split("|"),
    "wait" + "x" * 70 + "actually",
    # characters re equates with an ASCII letter though .lower() does not map them to it, and Kelvin K
    *"WAİT|waıt|mıstake|on ſecond thought|my mıstake|correctıon:|İ|ı|ſ|ſſſ|ıt's wrong".split("|"),
    *"thİs is wrong|\u212a|chec\u212a again".split("|"),
    # arithmetic: rule (a)
    *"12*3 = 38|12 * 3 = 36|3 × 4 = 12|3*4 = 13|(7 - 2) * 3 = 15|(7-2)*3 = 16".split("|"),
    *"1/4+1/4 = 0.5|1/4+1/4 = 1/2|1/4 + 1/4 = 0.25|2+3 = 4+1|2+3 = 5|2+3 = 6|2+3 = -5".split("|"),
    *"1/4+1/4 = 2/4|1/4+1/4 = 0.50|2^60 = 1152921504606846976".split("|"),
    "2^60 = 1152921504606846977",
    *"= 5|x = 5|5 >= 3|5 == 5|a != b|=< 3|= 1.5 / 2|3/0 = 1|1+2 = 3/0".split("|"),
    *"= -7|2^10 = 1024|2^10 = 1000.|٣+٤ = ٧|3+4 = ٨|1.5+1.5 = 3.0|1.5+1.5 = 3".split("|"),
    *"4 ÷ 2 = 2|4/2 = 3|((1+2)) = 3|(1+2 = 4|- 3+4 =|= 1 / 3|= 1/ 3|1+1 =\n2|1+1 = 3.".split("|"),
    *("9" * 4400, "1+1 = " + "9" * 4400, "1+1 = 1" + "0" * 4400, "1+" * 120 + "1 = 7"),
    # filler
    *"the|so|answer|é|中文|😀|\n|.|!|?|,|(|)|  |\t|_".split("|"),
]
SEPARATORS = ["", " ", " ", "\n", ", ", ". ", "\t", "!"]
CASES = [str, str, str.upper, str.lower, str.title, str.swapcase]


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randrange(0, 30)):
        frag = rng.choice(CASES)(rng.choice(FRAGMENTS))
        if rng.random() < 0.1:  # cut a fragment anywhere: phrases meet text at every boundary
            at = rng.randrange(len(frag) + 1)
            frag = frag[:at] if rng.random() < 0.5 else frag[at:]
        parts.append(frag)
        parts.append(rng.choice(SEPARATORS))
    return "".join(parts)


CUSTOM = [
    "hmm",
    "(hmm)",
    "Let Me",
    "ok?",
    "naïve",
    "ſo",
    "I see",
    "a",
    "\u212a",
    "wait",
    "x-y",
    "İs",
]


@pytest.mark.parametrize("seed", range(4))
def test_fast_search_equals_the_definition_on_random_texts(seed):
    rng = random.Random(seed)
    texts = [random_text(rng) for _ in range(1500)]
    refl = [has_reflection(t) for t in texts]
    assert refl == [ref_has_reflection(t) for t in texts]
    rev = [has_revision(t) for t in texts]
    assert rev == [ref_has_revision(t) for t in texts]
    assert [result_revisions(t) for t in texts] == [ref_result_revisions(t) for t in texts]
    # the cases are mixed: neither answer is the rule (else the equality above shows little)
    assert 0.2 < sum(refl) / len(texts) < 0.9 and 0.2 < sum(rev) / len(texts) < 0.9
    assert reflection_rate(texts) == sum(refl) / len(texts)
    assert revision_rate(texts) == sum(rev) / len(texts)


@pytest.mark.parametrize("seed", range(3))
def test_custom_phrases_equal_the_definition(seed):
    rng = random.Random(100 + seed)
    texts = [random_text(rng) + rng.choice(CUSTOM) + rng.choice(SEPARATORS) for _ in range(300)]
    texts += [rng.choice(CASES)(t) for t in CUSTOM] + ["", "(HMM)", "hmm)", "xhmm", "ok?!", "naÏve"]
    for _ in range(20):
        phrases = rng.sample(CUSTOM, rng.randrange(1, 5)) + rng.choice([[], ["  "]])
        got = [has_reflection(t, phrases) for t in texts]
        assert got == [ref_has_reflection(t, phrases) for t in texts], phrases
        assert reflection_rate(texts, phrases) == sum(got) / len(texts)
    pat = compile_phrases(["hmm"])  # a compiled pattern is searched as given
    assert [has_reflection(t, pat) for t in texts] == [ref_has_reflection(t, pat) for t in texts]


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        " ",
        "wait",
        "Wait",
        "xwait",
        "waitx",
        "wait.",
        ".wait",
        "\nwait\n",
        "wait, no",
        "no, wait",
        "no,wait",
        "wait actually",
        "WAİT",  # re: İ ~ i, so this is "wait"; .lower() gives five characters
        "waıt",
        "on ſecond thought",
        "correctıon:",
        "I made a mistake",
        "İ made a mistake",
        "ı made a mistake",
        "it’s wrong",
        "ÉWAIT",
        "_wait",
        "٣wait",
        "1+1 = 2. 1+1 = 3",
        "1+1 = 2. İ 1+1 = 3",
    ],
)
def test_edge_cases_equal_the_definition(text):
    assert has_reflection(text) is ref_has_reflection(text)
    assert has_revision(text) is ref_has_revision(text)
    assert result_revisions(text) == ref_result_revisions(text)


def test_long_texts_and_the_truncation_boundary():
    rng = random.Random(7)
    body = " ".join(rng.choice(["so", "the", "sum", "12", "+", "7", "is"]) for _ in range(80_000))
    assert len(body) > 200_000
    texts = [
        body,
        "Wait " + body,
        body + " wait",
        body[:199_994] + " wait, no " + body,  # has_revision reads 200,000 characters: "wait, n|o"
        body[:199_989] + " no, wait " + body,  # ... "no, wait |"
        body + " so 12*3 = 38 so " + body + " so 12*3 = 36",
        "12*3 = 38 so " + body[:150_000] + " so 12*3 = 36 so " + body,
        (body + " ") * 2 + "İ",
        "my mistake " + body,
    ]
    for t in texts:
        assert has_reflection(t) is ref_has_reflection(t)
        assert has_revision(t) is ref_has_revision(t)
    assert [has_reflection(t) for t in texts] == [0, 1, 1, 1, 1, 0, 0, 0, 1]
    assert [has_revision(t) for t in texts] == [0, 0, 0, 0, 1, 0, 1, 0, 1]


def test_lowering_is_exact_outside_unfolded():
    """The premise of the fast path: outside reflection._UNFOLDED, .lower() maps a character to one character
    of the same \\w and \\s class, and re.IGNORECASE matches an ASCII character (or ’) c exactly where
    .lower() gives c.lower(). Checked over every code point."""
    every = "".join(map(chr, range(0x110000)))
    lowered = [c.lower() for c in every]
    multi = {i for i, low in enumerate(lowered) if len(low) != 1}
    low = "".join(x if len(x) == 1 else "\0" for x in lowered)  # (same length as every)
    differ = set(multi)
    for cls in (r"\w", r"\s"):
        a = {m.start() for m in re.finditer(cls, every)}
        differ |= a ^ {m.start() for m in re.finditer(cls, low)}
    for c in [chr(i) for i in range(128) if not chr(i).isupper()] + ["’"]:
        a = {m.start() for m in re.finditer(re.escape(c), every, re.IGNORECASE)}
        differ |= a ^ {m.start() for m in re.finditer(re.escape(c), low)}
    assert {chr(i) for i in differ} == set(reflection._UNFOLDED)


def test_correction_patterns_are_written_for_the_fast_path():
    for p in CORRECTION_PATTERNS:  # lowercase, and \b then a letter in front (see reflection.py)
        assert p == p.lower() and re.match(r"\\b(?:\(\?:)?[a-z]", p), p
