"""Procedural tasks, the task registry and prompt templates."""

import pytest

from aha.data import R1_ZERO, TASKS, Task, get_task, register_task, render_prompt
from aha.data.tasks import split_of
from aha.models.tiny import char_tokenizer
from aha.rewards import countdown_reward, get_reward, math_accuracy

R1_ZERO_PAPER = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. User: {prompt}. "
    "Assistant:"
)


def test_r1_zero_template_verbatim():
    assert R1_ZERO == R1_ZERO_PAPER
    assert render_prompt("What is 2+2?") == R1_ZERO_PAPER.replace("{prompt}", "What is 2+2?")
    assert render_prompt("Q", prefill="<think>").endswith("User: Q. Assistant: <think>")


def test_other_templates():
    assert render_prompt("Q", "plain") == "Q\n"
    assert render_prompt("Q", "plain", prefill="<think>") == "Q\n<think>"
    assert (
        render_prompt("\\frac{1}{2}?", "Problem: {prompt}\nSolution:")
        == "Problem: \\frac{1}{2}?\nSolution:"
    )
    assert render_prompt("Q", "plain", system="S") == "S\nQ\n"
    with pytest.raises(ValueError, match="valid: r1-zero"):
        render_prompt("Q", "no-such-template")


def test_chat_template():
    tok = char_tokenizer()
    with pytest.raises(ValueError, match="chat template"):
        render_prompt("Q", "chat", tokenizer=tok)  # the char tokenizer has none
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    assert render_prompt("Q", "chat", tokenizer=tok) == "[user]Q[assistant]"
    assert (
        render_prompt("Q", "chat", tokenizer=tok, system="S", prefill="<think>")
        == "[system]S[user]Q[assistant]<think>"
    )


def test_get_task_unknown_lists_valid():
    with pytest.raises(ValueError, match="valid: .*arithmetic.*countdown"):
        get_task("nope")


def test_countdown_rows_are_solvable_deterministic_and_disjoint():
    task = get_task("countdown", train_size=400, test_size=100)
    assert (
        task.accuracy_reward == "countdown" and get_reward(task.accuracy_reward) is countdown_reward
    )
    train, test = task.dataset("train"), task.dataset("test")
    assert len(train) == 400 and len(test) == 100
    for row in list(train) + list(test):
        assert set(row) >= {"question", "numbers", "target"}
        assert 3 <= len(row["numbers"]) <= 4 and 1 <= row["target"] <= 100
        assert str(row["target"]) in row["question"]
        assert (
            countdown_reward(f"<answer>{row['solution']}</answer>", row["numbers"], row["target"])
            == 1.0
        )
    assert train[17] == get_task("countdown").dataset("train")[17]  # same row on every access
    assert train[-1] == train[399] and train[2:4] == [train[2], train[3]]
    keys = lambda rows: {(tuple(sorted(r["numbers"])), r["target"]) for r in rows}  # noqa: E731
    assert not keys(train) & keys(test)
    # disjointness is by construction: each row's split is a function of the problem itself
    assert all(
        split_of(f"countdown:{sorted(r['numbers'])}:{r['target']}", 10) == "test" for r in test
    )
    assert get_task("countdown", seed=1).dataset("train")[0] != train[0]
    with pytest.raises(IndexError):
        train[400]
    with pytest.raises(ValueError, match="valid: train, test"):
        task.dataset("validation")


def test_arithmetic_rows():
    task = get_task("arithmetic", ops=("*",), digits=(3, 3), test_size=50)
    assert task.accuracy_reward == "math"
    for row in task.dataset("test"):
        a, op, b = row["question"].removeprefix("What is ").removesuffix("?").split()
        assert op == "*" and 100 <= int(a) <= 999 and int(row["answer"]) == int(a) * int(b)
        assert math_accuracy(f"<answer>{int(row['answer']):,}</answer>", row["answer"]) == 1.0
    train_keys = {
        r["question"]
        for r in get_task("arithmetic", ops=("*",), digits=(3, 3)).dataset("train")[:2000]
    }
    assert not train_keys & {r["question"] for r in task.dataset("test")}
    with pytest.raises(ValueError, match="ops must be among"):
        get_task("arithmetic", ops=("-",))


def test_register_task():
    @register_task("test-constant")
    class Constant(Task):
        name, accuracy_reward = "test-constant", "exact"

        def dataset(self, split):
            return [{"question": "Say hi", "answer": "hi"}]

    try:
        assert get_task("test-constant").dataset("train")[0]["answer"] == "hi"
        with pytest.raises(ValueError, match="already registered"):
            register_task("test-constant")(Constant)
    finally:
        TASKS.pop("test-constant")
