"""Estimators and reflection statistics against hand-computed values and exact integer references."""

import math
import time
from fractions import Fraction

import numpy as np
import pytest

from aha.eval.estimators import (
    bootstrap_ci,
    cons_at_k,
    majority_vote,
    normalized_equal,
    pass1,
    pass_at_k,
)
from aha.eval.reflection import (
    compile_phrases,
    has_reflection,
    has_revision,
    reflection_rate,
    result_revisions,
    revision_rate,
)

# ---------------------------------------------------------------- pass@k


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # k=1 is c/n
    assert pass_at_k(6, 0, 3) == 0.0
    assert pass_at_k(6, 6, 3) == 1.0
    assert pass_at_k(6, 4, 3) == 1.0  # n-c = 2 < k: every 3-subset has a correct one


def exact_pass_at_k(n, c, k):
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_exact_binomials():
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(
                    float(exact_pass_at_k(n, c, k)), abs=1e-12
                )
    # large n, where C(n, k) overflows a float: the product form stays exact to ~1e-12
    assert pass_at_k(2000, 3, 100) == pytest.approx(float(exact_pass_at_k(2000, 3, 100)), rel=1e-12)
    assert pass_at_k(1024, 1, 1000) == pytest.approx(
        float(exact_pass_at_k(1024, 1, 1000)), rel=1e-12
    )


@pytest.mark.parametrize(
    "n,c,k", [(4, 5, 1), (4, -1, 1), (4, 1, 5), (4, 1, 0), (0, 0, 1), (4.0, 1, 1)]
)
def test_pass_at_k_rejects_impossible(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass1():
    assert pass1([True, False, False, True]) == 0.5
    assert pass1([0, 0, 1]) == pytest.approx(1 / 3)
    assert math.isnan(pass1([]))


# ---------------------------------------------------------------- cons@k


def frac_equal(a, b):
    return Fraction(a) == Fraction(b)


def test_cons_uses_equivalence_not_string_equality():
    answers = ["7", "1/2", "0.5", "2/4", "7"]
    correct = [0, 1, 1, 1, 0]
    assert cons_at_k(answers, correct, equivalent=frac_equal) == 1.0  # {1/2, 0.5, 2/4} = 3 votes
    assert (
        cons_at_k(answers, correct, equivalent=lambda a, b: a == b) == 0.0
    )  # "7" has 2 votes, others 1
    winner, group_of = majority_vote(answers, frac_equal)
    assert winner == 1 and group_of == [0, 1, 1, 1, 0]


def test_cons_tie_goes_to_earliest_group():
    assert cons_at_k(["a", "b", "b", "a"], [1, 0, 0, 1]) == 1.0
    assert cons_at_k(["b", "a", "a", "b"], [0, 1, 1, 0]) == 0.0
    assert majority_vote(["x", "y", "z"])[0] == 0  # all singletons: the first


def test_cons_none_never_wins_unless_all_none():
    assert majority_vote([None, None, None, "5"])[0] == 3
    assert cons_at_k([None, None, None, "5"], [0, 0, 0, 1]) == 1.0
    winner, group_of = majority_vote([None, None])
    assert winner == 0 and group_of == [-1, -1]
    assert cons_at_k([None, None], [0, 0]) == 0.0


def test_cons_equivalence_errors_mean_not_equivalent():
    def boom(a, b):
        raise RuntimeError("parser died")

    assert majority_vote(["1", "1", "2"], boom) == (0, [0, 1, 2])


def test_cons_length_mismatch():
    with pytest.raises(ValueError):
        cons_at_k(["1"], [1, 0])


def test_normalized_equal():
    assert normalized_equal(" 42 ", "42")
    assert normalized_equal("0.50", ".5")
    assert normalized_equal("1,000", "1000")
    assert normalized_equal("$7$", "7.")
    assert not normalized_equal("7", "8")
    assert not normalized_equal("x+1", "1+x")


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_constant_and_degenerate():
    assert bootstrap_ci([0.25] * 10) == (0.25, 0.25)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert all(math.isnan(v) for v in bootstrap_ci([1.0, 0.0], n_boot=0))
    assert bootstrap_ci([1.0, float("nan"), 1.0]) == (1.0, 1.0)  # non-finite problems dropped
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], alpha=1.5)


def test_bootstrap_binary_mean_matches_normal_approximation():
    vals = [0.0, 1.0] * 100  # mean 0.5, se = 0.5 / sqrt(200)
    lo, hi = bootstrap_ci(vals, n_boot=2000, seed=1)
    half = 1.96 * 0.5 / math.sqrt(200)  # 0.0693
    assert lo == pytest.approx(0.5 - half, abs=0.015) and hi == pytest.approx(0.5 + half, abs=0.015)
    assert bootstrap_ci(vals, n_boot=2000, seed=1) == (lo, hi)  # deterministic per seed


def test_bootstrap_resamples_problems_not_samples():
    # each problem: k=2 identical values; a (P, k) input resamples rows, so the median is one of the row values
    vals = np.array([[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]])
    lo, hi = bootstrap_ci(vals, n_boot=500, statistic=np.median)
    assert 1.0 <= lo <= hi <= 5.0 and {lo, hi} <= {1.0, 3.0, 5.0}
    lo_max, hi_max = bootstrap_ci(vals, n_boot=500, statistic=np.max)
    assert hi_max == 5.0 and lo_max >= 1.0


# ---------------------------------------------------------------- reflection phrases


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Wait, 3+4 is 8?", True),
        ("WAIT.", True),
        ("He awaits.", False),
        ("waiting", False),
        ("let me\n  check that", True),
        ("Let me re-check.", True),
        ("recheck", True),
        ("we verify", True),
        ("verified", False),
        ("a mistake here", True),
        ("mistakenly", False),
        ("Double-check: ok", True),
        ("checking", False),
        ("", False),
    ],
)
def test_has_reflection(text, expected):
    assert has_reflection(text) is expected


def test_reflection_rate_and_custom_phrases():
    texts = ["wait", "no", "Let me check", "checking"]
    assert reflection_rate(texts) == 0.5
    assert reflection_rate(texts, ["no"]) == 0.25
    assert reflection_rate(["(hmm)"], ["hmm"]) == 1.0
    assert reflection_rate(["x"], compile_phrases(["x"])) == 1.0
    assert math.isnan(reflection_rate([]))
    with pytest.raises(ValueError):
        compile_phrases(["  "])


# ---------------------------------------------------------------- revisions


def test_result_revision_rule_a():
    assert result_revisions("12*3 = 38. Hmm, 12 * 3 = 36.") == [("12*3", "38", "36")]
    assert result_revisions("3 × 4 = 12, so 3*4 = 13") == [("3*4", "12", "13")]
    assert result_revisions("(7 - 2) * 3 = 15; then (7-2)*3 = 16") == [("(7-2)*3", "15", "16")]
    assert result_revisions("so 1+1 = 3.5. Again 1 + 1 = 2.") == [("1+1", "3.5", "2")]
    assert result_revisions("12*3 = 38. 12 * 3 = 36.") == [
        ("12*3", "38", "36")
    ]  # full stop, not "38.12"
    assert result_revisions("2+3 = 5 and later 2 + 3 = 5") == []  # same value: no revision
    assert result_revisions("1/4+1/4 = 0.5 ... 1/4+1/4 = 1/2") == []  # 0.5 == 1/2 exactly
    assert result_revisions("2+3 = 4+1 = 5 and 2+3 = 6") == []  # "4+1" is no result of 2+3
    assert result_revisions("x = 5 then x = 6") == []  # no operator: not an expression
    assert result_revisions("5 >= 3 and 5+0 <= 9, 5 == 5") == []


@pytest.mark.parametrize(
    "text,expected",
    [
        ("12*3 = 38. 12 * 3 = 36.", True),  # rule (a)
        ("Wait, actually the answer is 7.", True),  # rule (b)
        ("Wait, no. It is 7.", True),
        ("wait, I think the sum is actually 9", True),
        ("No, wait: 9.", True),
        ("That's wrong, so try 5.", True),
        ("I made a mistake.", True),
        ("my mistake", True),
        ("Correction: 5", True),
        ("Wait for it. The answer is 7.", False),  # reflection phrase but no correction
        ("wait, there is no carry", False),
        ("Wait. The answer is, actually, 7", False),  # "actually" in the next sentence
        ("The answer is wrong?", False),
        ("12*3 = 36. 12*3 = 36.", False),
    ],
)
def test_has_revision(text, expected):
    assert has_revision(text) is expected


def test_revision_rate_and_pathological_input_is_fast():
    assert revision_rate(["12*3 = 38. 12*3 = 36.", "ok", "no, wait", "fine"]) == 0.5
    assert math.isnan(revision_rate([]))
    t = time.perf_counter()
    assert has_revision("1+" * 100_000 + "1 = 5") is False
    assert has_revision(("9" * 50 + " ") * 2000 + "= 3 " * 2000) is False
    assert time.perf_counter() - t < 2.0
