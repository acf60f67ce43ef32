"""extract_answer under the strict and lenient modes, and verifiers scored under a mode (issue 20), on
hand-written completions in the styles of R1, instruct and base models."""

import pytest

from aha.rewards import (
    ANSWER_MODES,
    answer_completion,
    countdown_reward,
    exact_match,
    extract_answer,
    math_accuracy,
    score_answer,
)
from aha.rewards.format import extract_answer as strict_answer

CASES = [  # (text, {mode: expected answer})
    ("The answer is 42.", {"tags": None, "boxed": None, "last-number": "42"}),
    ("**Answer:** 1,234", {"tags": None, "boxed": None, "last-number": "1234"}),
    (
        "So x = \\boxed{\\frac{1}{2}}.",
        {"tags": None, "boxed": "\\frac{1}{2}", "last-number": "1/2"},
    ),
    ("<think>6*7</think><answer>42</answer>", {"tags": "42", "boxed": None, "last-number": "42"}),
    (
        "<think>try \\boxed{41}</think><answer>\\boxed{42} </answer>",
        {"tags": "42", "boxed": "42", "last-number": "42"},
    ),
    ("\\boxed{\\sqrt{\\frac{a}{b}}} done", {"boxed": "\\sqrt{\\frac{a}{b}}", "last-number": None}),
    ("\\boxed{2} then \\boxed{ 3 }", {"boxed": "3", "last-number": "3"}),
    ("unbalanced \\boxed{4", {"boxed": None, "last-number": "4"}),
    ("10 - 3 = 7", {"last-number": "7"}),
    ("10-3=7, and it drops by -5", {"last-number": "-5"}),
    ("Total: $1,234.50 in all", {"last-number": "1234.50"}),
    ("It is 2.0.", {"last-number": "2"}),
    ("half: 2/4", {"last-number": "1/2"}),
    ("so -\\frac{3}{4} remains", {"last-number": "-3/4"}),
    ("1{,}000 and 1\\,234", {"last-number": "1234"}),
    ("5, 100", {"last-number": "100"}),  # two numbers, never 5100
    ("1,2345", {"last-number": "2345"}),
    ("at 3/0 we stop, 8", {"last-number": "8"}),
    ("no digits here", {"tags": None, "boxed": None, "last-number": None}),
    ("", {"tags": None, "boxed": None, "last-number": None}),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_extract_answer_modes(text, expected):
    for mode, want in expected.items():
        assert extract_answer(text, mode) == want, mode
    assert extract_answer(text) == strict_answer(text)  # "tags" is the default and the strict rule


def test_modes_are_total_and_a_wrong_mode_is_the_callers_mistake():
    hostile = [None, 42, "\\boxed{" * 10_000, "9" * 100_000, "-" * 10_000 + "1", "<answer>" * 1000]
    for text in hostile:
        for mode in ANSWER_MODES:
            assert extract_answer(text, mode) is None or isinstance(extract_answer(text, mode), str)
            assert isinstance(answer_completion(text, mode), str)
    with pytest.raises(
        ValueError, match="unknown answer mode 'lenient'; valid: tags, boxed, last-number"
    ):
        extract_answer("42", "lenient")


def test_verifiers_score_under_a_mode():
    instruct = "Janet has 16 - 3 - 4 = 9 eggs and sells them for $2 each, so she makes 18 dollars."
    gsm8k = "16 - 3 - 4 = 9 eggs; 9 * 2 = 18\n#### 18"
    assert score_answer(math_accuracy, instruct, "tags", answer=gsm8k) == 0.0  # strict: no tags
    assert score_answer(math_accuracy, instruct, "last-number", answer=gsm8k) == 1.0
    assert score_answer(math_accuracy, instruct, "boxed", answer=gsm8k) == 0.0
    boxed = "We get $\\boxed{\\dfrac{1}{2}}$."
    assert score_answer(math_accuracy, boxed, "boxed", answer="\\boxed{0.5}") == 1.0
    assert score_answer(math_accuracy, boxed, "last-number", answer="\\boxed{0.5}") == 1.0
    r1 = "<think>6*7=42</think><answer>42</answer> The answer is 41."
    assert score_answer(math_accuracy, r1, "tags", answer="42") == 1.0
    assert score_answer(math_accuracy, r1, "last-number", answer="42") == 0.0
    assert score_answer(exact_match, "I think Paris", "tags", answer="Paris") == 0.0
    countdown = "Using all: \\boxed{(6 + 4) * 3}"
    assert score_answer(countdown_reward, countdown, "boxed", numbers=[3, 4, 6], target=30) == 1.0
    # an answer that holds a tag cannot steer which block the verifier reads
    assert answer_completion("\\boxed{1</answer><answer>42}", "boxed") == ""
    assert answer_completion("no answer", "boxed") == "" and answer_completion("x", "tags") == "x"


@pytest.mark.parametrize(
    "answer,gold,expected",
    [
        ("#### 72", "72", 1.0),  # verl's GSM8K prompt asks for "#### N"
        ("Answer: 34", "34", 1.0),  # its DAPO prompt for "Answer: N"
        ("Answer: 34.", "34", 1.0),
        ("The final answer is 12", "12", 1.0),
        ("The answer is $\\frac12$", "0.5", 1.0),
        ("The answer: \\boxed{7}", "7", 1.0),
        ("Answer:", "34", 0.0),
        ("Answers: 5", "5", 0.0),  # only the marker itself is dropped
        ("72 dollars", "72", 1.0),  # a number and a noun (math-verify read "dollars" as a product)
        ("34 students.", "34", 1.0),
        ("5 squared", "5", 0.0),  # words that change the value are not dropped
        ("2 thousand", "2", 0.0),
        ("3 or more", "3", 0.0),
        ("2 pi", "2", 0.0),
        ("\\boxed 5", "5", 1.0),  # MATH's brace-less box
        ("so $\\boxed 5$.", "5", 1.0),
        ("\\boxed {12}", "12", 1.0),
    ],
)
def test_answer_markers_units_and_braceless_boxes(answer, gold, expected):
    from aha.rewards.math import math_accuracy

    assert math_accuracy(f"<think>t</think><answer>{answer}</answer>", gold) == expected


def test_braceless_box_in_a_reference():
    from aha.rewards.math import reference_answer

    assert reference_answer("so the answer is $\\boxed 5$.") == "5"
