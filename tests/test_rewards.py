"""Table-driven tests of the per-item rewards, including reward-hacking attempts (issue 3)."""

import pytest

from aha.rewards import (
    countdown_reward,
    exact_match,
    extract_answer,
    format_reward,
    get_reward,
    language_consistency,
    last_boxed,
    math_accuracy,
    reference_answer,
    soft_overlong_penalty,
    tag_reward,
)

GOOD = "<think>I add.</think> <answer>42</answer>"

FORMAT = [  # (completion, think_prefilled, expected)
    (GOOD, False, 1.0),
    ("\n <think>\nreason\n</think>\n\n<answer>\n42\n</answer>\n  ", False, 1.0),
    ("<think>6*7=42</think><answer>42</answer>", False, 1.0),
    ("<think>6*7=42</think><answer>42</answer> trailing", False, 0.0),  # text after the answer
    (
        "preamble <think>6*7=42</think><answer>42</answer>",
        False,
        0.0,
    ),  # text before the think block
    ("<think>6*7=42</think> between <answer>42</answer>", False, 0.0),  # text between blocks
    ("<think> </think><answer>42</answer>", False, 0.0),  # empty reasoning
    ("<think>6*7=42</think><answer>  </answer>", False, 0.0),  # empty answer
    (
        "<think>6*7=42</think><answer>1</answer><answer>2</answer>",
        False,
        0.0,
    ),  # several answer blocks
    (
        "<think>r <answer>1</answer></think><answer>2</answer>",
        False,
        0.0,
    ),  # tags inside the reasoning
    ("<think>a<think>b</think><answer>2</answer>", False, 0.0),  # repeated <think>
    ("<answer>42</answer>", False, 0.0),  # no reasoning
    ("<think>6*7=42</think>", False, 0.0),  # no answer
    ("<think>6*7=42</think><аnswer>42</аnswer>", False, 0.0),  # Cyrillic 'а' look-alike tags
    ("<think>6*7=42</think>＜answer＞42＜/answer＞", False, 0.0),  # fullwidth brackets
    ("<THINK>r</THINK><ANSWER>42</ANSWER>", False, 0.0),  # wrong case
    ("<think>6*7=42</think><answer>42", False, 0.0),  # unclosed answer (truncated)
    ("", False, 0.0),
    ("reason</think><answer>42</answer>", True, 1.0),  # prompt ended in <think>
    ("<think>reason</think><answer>42</answer>", True, 0.0),  # prefilled tag repeated
    (" </think><answer>42</answer>", True, 0.0),  # empty reasoning
    # the template's placeholder and near-empty reasoning earn nothing (issue 20)
    ("<think> reasoning process here </think> <answer> 42 </answer>", False, 0.0),
    (" reasoning process here </think> <answer> 42 </answer>", True, 0.0),  # the observed hack
    ("<think>Reasoning  Process\nHere.</think><answer>42</answer>", False, 0.0),  # case, spacing
    ("<think>reasoning process here: 6*7=42</think><answer>42</answer>", False, 1.0),  # + reasoning
    ("<think>6*7=42</think><answer>answer here</answer>", False, 0.0),
    ("<think>6*7=42</think><answer> Answer here </answer>", False, 0.0),
    ("<think>...</think><answer>42</answer>", False, 0.0),  # 3 characters: near-empty
    ("<think> o k </think><answer>42</answer>", False, 0.0),
    ("<think>2+2</think><answer>4</answer>", False, 0.0),
    ("<think>2+2=4</think><answer>4</answer>", False, 1.0),  # 5 characters: reasoning
    ("hmm</think><answer>42</answer>", True, 0.0),
]


@pytest.mark.parametrize("completion,prefilled,expected", FORMAT)
def test_format_reward(completion, prefilled, expected):
    assert format_reward(completion, think_prefilled=prefilled) == expected


TAG = [
    (GOOD, False, 1.0),
    ("<think>6*7=42</think>", False, 0.5),
    ("<think>6*7=42</think><answer>4", False, 0.75),
    ("x <think>6*7=42</think><answer>4</answer>", False, 0.75),  # <think> not at the start
    ("<think>6*7=42</think><answer>4</answer> x", False, 0.75),  # text after </answer>
    ("<answer>4</answer><think>6*7=42</think>", False, 0.25),  # swapped: only </think> is in place
    (
        "<think><think>6*7=42</think></think><answer>4</answer>",
        False,
        0.5,
    ),  # repeated tags get nothing
    ("nothing", False, 0.0),
    ("2+2=4</think><answer>4</answer>", True, 1.0),
    ("<think>6*7=42</think><answer>4</answer>", True, 0.75),
    # the template's placeholder and near-empty reasoning earn nothing (issue 20)
    (" reasoning process here </think> <answer> 42 </answer>", True, 0.0),  # the observed hack
    ("<think> reasoning process here </think> <answer> 42 </answer>", False, 0.0),
    ("<think>reasoning process here</think>", False, 0.0),
    ("<think>6*7=42</think><answer> answer here </answer>", False, 0.0),
    ("<think>6*7=42</think><answer></answer>", False, 0.0),
    ("<think>ok</think><answer>42</answer>", False, 0.0),
    ("<think>reasoning process here", False, 0.25),  # unclosed: nothing to judge yet
]


@pytest.mark.parametrize("completion,prefilled,expected", TAG)
def test_tag_reward(completion, prefilled, expected):
    assert tag_reward(completion, think_prefilled=prefilled) == expected


def test_placeholders_are_the_templates_words_and_the_threshold_is_a_knob():
    from aha.data.templates import R1_ZERO
    from aha.rewards.format import MIN_THINK_CHARS, PLACEHOLDERS

    assert MIN_THINK_CHARS == 4
    for p in PLACEHOLDERS:
        assert f"{p} </" in R1_ZERO  # the literal example of each block in the r1-zero instructions
    short = "<think>r</think><answer>42</answer>"
    assert format_reward(short) == tag_reward(short) == 0.0
    assert format_reward(short, min_think_chars=1) == tag_reward(short, min_think_chars=1) == 1.0
    placeholder = "<think>reasoning process here</think><answer>42</answer>"
    assert (
        format_reward(placeholder, min_think_chars=0) == 1.0
    )  # only the count judges the think block
    hostile = ["<think>" * 10_000, "</think>" * 10_000 + "answer here" * 10_000, None, 42, "\x00"]
    for h in hostile:
        assert format_reward(h) in (0.0, 1.0) and 0.0 <= tag_reward(h) <= 1.0


EXTRACT = [
    (GOOD, "42"),
    ("<answer>1</answer> <answer> 2 </answer>", "2"),  # the last block
    ("<answer>1</answer> <answer>2", None),  # last block unclosed
    ("The answer is 42.", None),  # answer outside the tags
    ("\\boxed{42} <answer>41</answer>", "41"),  # boxed outside the block ignored
    ("<answer>so \\boxed{1} then \\boxed{\\frac{1}{2}}</answer>", "\\frac{1}{2}"),
    (
        "<answer>\\boxed{\\frac{1}{2}</answer>",
        "\\boxed{\\frac{1}{2}",
    ),  # unbalanced boxed: the whole block
    ("<answer></answer>", ""),
    ("<answer>" + "{" * 5000 + "}" * 5000 + "</answer>", "{" * 5000 + "}" * 5000),
]


@pytest.mark.parametrize("completion,expected", EXTRACT)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_last_boxed_nested():
    assert last_boxed("a \\boxed{x^{2}+\\frac{1}{y}} b") == "x^{2}+\\frac{1}{y}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{" * 5000) is None


def wrap(answer):
    return f"<think>work</think><answer>{answer}</answer>"


COUNTDOWN = [  # (answer, numbers, target, expected)
    ("(6 + 4) * 3", [3, 4, 6], 30, 1.0),
    ("3 * (6 + 4) = 30", [3, 4, 6], 30, 1.0),
    ("3 × (6 + 4)", [3, 4, 6], 30, 1.0),
    ("(6 + 4) * 3 = 31", [3, 4, 6], 30, 0.0),  # wrong claimed right side
    ("(6 + 4) * 3 = 30 = 30", [3, 4, 6], 30, 0.0),
    ("6 * 4 + 3", [3, 4, 6], 30, 0.0),  # wrong value (27)
    ("(6 + 4) * 3 + 0", [3, 4, 6], 30, 0.0),  # an extra number
    ("(6 + 4) * 3", [3, 4, 6, 2], 30, 0.0),  # a number unused
    ("(6 + 6) * 3", [3, 6], 36, 0.0),  # a number used twice
    ("(6 + 6) * 3", [3, 6, 6], 36, 1.0),  # ... unless given twice
    ("8 / (3 - 8 / 3)", [3, 3, 8, 8], 24, 1.0),  # needs exact rationals
    ("7 / 2 * 2", [2, 2, 7], 7, 1.0),
    ("-(3 - 9) * 2", [2, 3, 9], 12, 1.0),  # unary minus
    ("6 / (3 - 3)", [3, 3, 6], 0, 0.0),  # division by zero
    ("6 ** 2", [6, 2], 36, 0.0),  # no power operator
    ("9**9**9**9", [9, 9, 9, 9], 0, 0.0),
    ("__import__('os').system('echo hi')", [1], 1, 0.0),  # never eval
    ("6.0 * 5", [6, 5], 30, 0.0),  # decimals are not the given numbers
    ("(" * 5000 + "1" + ")" * 5000, [1], 1, 0.0),  # too long / too deep
    ("(((1)))", [1], 1, 1.0),
    ("", [1], 1, 0.0),
    ("3 + 4", [3, 4], "7", 1.0),  # target given as a string
]


@pytest.mark.parametrize("answer,numbers,target,expected", COUNTDOWN)
def test_countdown_reward(answer, numbers, target, expected):
    assert countdown_reward(wrap(answer), numbers, target) == expected


def test_countdown_answer_outside_tags():
    assert countdown_reward("(6 + 4) * 3", [3, 4, 6], 30) == 0.0
    assert countdown_reward(None, [3, 4, 6], 30) == 0.0
    assert countdown_reward(wrap("3 + 4"), None, 7) == 0.0


MATH = [  # (answer, reference, expected)
    ("42", "42", 1.0),
    ("42", "Janet sells 16 - 3 - 4 = 9 duck eggs.\n#### 42", 1.0),  # GSM8K reference
    ("1,234", "#### 1234", 1.0),  # thousands separator
    ("1{,}234", "1234", 1.0),
    ("1\\,234", "1234", 1.0),
    ("12,345,678", "#### 12345678", 1.0),
    ("$ 1,234.5", "1234.5", 1.0),
    # only the listed separators join digits (issue 17, item 13; the last is Math-Verify's own case)
    ("5, 100", "5100", 0.0),
    ("1, 000", "#### 1000", 0.0),
    ("0,111", "111", 0.0),
    ("1,23", "123", 0.0),
    ("1 234", "1234", 0.0),
    ("\\boxed{32, 349}", "32349", 0.0),
    ("x = 58,500", "58,500", 1.0),  # MATH-500's comma-grouped golds after "x ="
    ("x = 58,500", "58,501", 0.0),
    ("$18", "#### 18", 1.0),
    ("18.0", "18", 1.0),
    ("-3", "#### -3", 1.0),
    ("0.5", "\\frac{1}{2}", 1.0),
    ("\\frac{1}{2}", "so it is \\boxed{\\frac12}.", 1.0),  # MATH reference, \frac12 form
    ("1/2", "\\dfrac{1}{2}", 1.0),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}", 1.0),
    ("2\\pi", "\\boxed{2 \\pi}", 1.0),
    ("x^2 + 2x + 1", "\\boxed{(x+1)^2}", 1.0),
    ("\\left(3, \\frac{\\pi}{2}\\right)", "\\boxed{(3,\\frac{\\pi}{2})}", 1.0),  # tuple
    ("[1, 5)", "\\boxed{[1,5)}", 1.0),  # interval
    ("(1, 5)", "\\boxed{[1,5]}", 0.0),
    ("\\{1, 2\\}", "\\boxed{\\{2, 1\\}}", 1.0),  # set
    # braces are not spelling: MATH-500 golds against answers that differ only in grouping (a walkthrough)
    ("\\frac{\\sqrt{2}}{15}", "\\frac{\\sqrt{21}}{5}", 0.0),
    ("\\sqrt{5}1", "\\sqrt{51}", 0.0),
    ("2\\sqrt{11}3", "2\\sqrt{113}", 0.0),
    ("\\frac{12}{3}\\pi", "\\frac{1}{23}\\pi", 0.0),
    ("2^{1}0", "2^{10}", 0.0),
    ("x^{2} + 1", "x^2+1", 1.0),
    ("\\text{(B)}", "(B)", 1.0),
    ("41", "#### 42", 0.0),
    ("0.333333", "\\frac{1}{3}", 0.0),  # plain numbers compare exactly
    ("1, 2, 42", "#### 42", 0.0),  # many candidates
    ("41 or 42", "#### 42", 0.0),
    ("42 or 43", "#### 42", 0.0),
    ("", "#### 42", 0.0),
    ("\\frac{1}{0}", "\\boxed{1}", 0.0),
    ("9**9**9**9", "#### 42", 0.0),
    ("10^{10^{10^{10}}}", "#### 42", 0.0),
    ("2^{1000000}", "\\boxed{2}", 0.0),
    ("{" * 5000 + "42" + "}" * 5000, "#### 42", 0.0),
    ("4" * 100_000, "#### 4", 0.0),
    ("42", "", 0.0),
    ("42", None, 0.0),
]


@pytest.mark.parametrize("answer,reference,expected", MATH)
def test_math_accuracy(answer, reference, expected):
    assert math_accuracy(wrap(answer), reference) == expected


def test_math_hacks_outside_answer_block():
    assert math_accuracy("<think>the answer is 42</think><answer>41</answer>", "#### 42") == 0.0
    assert math_accuracy("The answer is \\boxed{42}", "#### 42") == 0.0
    assert math_accuracy("<think>r</think><answer>42</answer><answer>41</answer>", "#### 42") == 0.0
    assert math_accuracy("<think>r</think><аnswer>42</аnswer>", "#### 42") == 0.0
    # two boxed answers are a two-part answer (as Math-Verify reads them), not "the last one counts"
    assert math_accuracy("<answer>\\boxed{41} \\boxed{42}</answer>", "#### 42") == 0.0


MULTI_BOXED = [  # (answer block, reference, expected): several \boxed{} in the answer (Math-Verify's cases)
    ("\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}", "$$(2, 2), (6, 2)$$", 1.0),
    ("\\boxed{1} and \\boxed{2} and \\boxed{3}", "$${1,2,3}$$", 1.0),
    ("\\boxed{-2} and \\boxed{1}", "\\boxed{-2, 1}", 1.0),
    (
        "\\boxed{15\\frac{39}{40}} = \\boxed{\\frac{639}{40}}",
        "\\frac{639}{40}",
        1.0,
    ),  # one answer, two forms
    ("\\boxed{5}, that is \\boxed{5}", "5", 1.0),
    ("\\boxed{3} or \\boxed{5}", "5", 0.0),  # a hedge
    ("\\boxed{1} and \\boxed{2}", "\\{1, 2, 3\\}", 0.0),
]


@pytest.mark.parametrize("block,reference,expected", MULTI_BOXED)
def test_several_boxed_answers_are_the_parts_of_one(block, reference, expected):
    assert math_accuracy(wrap(block), reference) == expected


def test_reference_answer_forms():
    assert reference_answer("work\n#### 1,000") == "1,000"
    assert reference_answer("so \\boxed{\\frac{a}{b}} and") == "\\frac{a}{b}"
    assert reference_answer(" 7 ") == "7"
    assert reference_answer(7) == "7"
    assert reference_answer("") is None


EXACT = [
    ("<answer> Paris </answer>", "Paris", 1.0),
    ("<answer>paris</answer>", "Paris", 0.0),
    ("<answer>New  York</answer>", "New York", 1.0),
    ("Paris", "Paris", 0.0),
    ("<answer></answer>", "", 0.0),
]


@pytest.mark.parametrize("completion,answer,expected", EXACT)
def test_exact_match(completion, answer, expected):
    assert exact_match(completion, answer) == expected


LANGUAGE = [
    ("<think>we add the numbers</think><answer>3</answer>", "en", 1.0),
    ("<think>we add 你好 x</think><answer>3</answer>", "en", 3 / 5),  # 5 words: we add 你 好 x
    ("<think>我们 计算</think>", "zh", 1.0),
    ("<think>Привет world</think>", "ru", 0.5),
    ("<think>1 + 2 = 3</think>", "en", 0.0),  # no words at all
    ("reason only, no tags", "en", 1.0),
    ("<think>hello</think>", "xx", 0.0),  # unknown language
]


@pytest.mark.parametrize("completion,lang,expected", LANGUAGE)
def test_language_consistency(completion, lang, expected):
    assert language_consistency(completion, lang) == pytest.approx(expected)


@pytest.mark.parametrize(
    "length,expected",
    [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0), (101, -1.0), (10_000, -1.0)],
)
def test_soft_overlong_penalty(length, expected):
    # DAPO eq. 13 with L_max = 100, L_cache = 20: ramp from 0 at L=80 to -1 at L=100
    assert soft_overlong_penalty(length, 100, 20) == pytest.approx(expected)
    assert soft_overlong_penalty(length, 100, 0) == (-1.0 if length > 100 else 0.0)


NASTY = [
    None,
    "",
    "\x00",
    "<answer>",
    "</answer><answer>",
    "<answer>\\boxed{</answer>",
    "\ud800",
    "<answer>" + "\\frac{" * 3000 + "</answer>",
    "<think>" * 1000,
    12345,
    b"<answer>1</answer>",
]


@pytest.mark.parametrize("completion", NASTY)
def test_rewards_are_total(completion):
    for fn, kwargs in [
        (format_reward, {}),
        (tag_reward, {}),
        (math_accuracy, {"answer": "1"}),
        (countdown_reward, {"numbers": [1], "target": 1}),
        (exact_match, {"answer": "1"}),
        (language_consistency, {}),
    ]:
        assert fn(completion, **kwargs) in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_registry():
    assert get_reward("math") is math_accuracy
    assert get_reward("countdown") is countdown_reward
    assert get_reward("aha.rewards.format:format_reward") is format_reward
    with pytest.raises(ValueError, match="valid: .*countdown.*math"):
        get_reward("nope")
    with pytest.raises(ValueError, match="cannot import"):
        get_reward("no_such_module_xyz:f")
