"""Lenient figures beside the strict ones (against a slow reference: score_answer per sample on random
completions), prompts fitted to the model's context, the chat-template notice and the named R1-Zero system."""

import random

import numpy as np
import pytest

from aha.eval.context import fit_to_context, model_context
from aha.eval.evaluate import evaluate
from aha.rewards import RewardRunner, math_accuracy, score_answer
from aha.rollout import Completion


class Scripted:
    """Returns texts[p][j] for sample j of prompt p (prompts in the order evaluate() sends them)."""

    def __init__(self, texts, model=None):
        self.texts, self.at, self.model, self.prompt_lengths = texts, 0, model, []

    def generate(self, prompt_token_ids, params):
        out = []
        for i, ids in enumerate(prompt_token_ids):
            self.prompt_lengths.append((len(ids), params.max_tokens))
            for text in self.texts[self.at][: params.n]:
                out.append(Completion(i, [1] * 3, [0.0] * 3, text, "stop"))
            self.at += 1
        return out


@pytest.fixture(scope="module")
def tok():
    from aha.models.tiny import char_tokenizer

    return char_tokenizer()


def random_completion(rng, answer: int) -> str:
    """A completion answering right or wrong in one of the ways models write answers."""
    value = answer if rng.random() < 0.5 else answer + rng.choice([-2, -1, 1, 7])
    forms = [
        f"<think>{rng.randint(0, 99)} steps</think> <answer>{value}</answer>",
        f"so the result is \\boxed{{{value}}}.",
        f"First {rng.randint(0, 9)}, then {value}",
        f"<answer>{value}</answer> and finally {rng.randint(0, 99)}",
        "I cannot tell.",
        f"\\boxed{{{value}}} <answer>{answer + 1}</answer>",
    ]
    return rng.choice(forms)


@pytest.mark.parametrize("mode", ["boxed", "last-number"])
def test_lenient_figures_match_score_answer_per_sample(tok, mode):
    rng = random.Random(f"lenient-{mode}")
    P, k = 12, 4
    rows = [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(P)]
    texts = [[random_completion(rng, 2 * i) for _ in range(k)] for i in range(P)]
    with RewardRunner([("math", 1.0), ("format", 1.0)], timeout=10) as runner:
        res = evaluate(
            Scripted(texts), tok, rows, accuracy="math", k=k, answer=mode, n_boot=0,
            template="plain", reward_runner=runner,
        )  # fmt: skip
    strict = np.array([[math_accuracy(t, r["answer"]) for t in ts] for ts, r in zip(texts, rows)])
    lenient = np.array(
        [[score_answer(math_accuracy, t, mode, answer=r["answer"]) for t in ts] for ts, r in zip(texts, rows)]
    )  # fmt: skip
    assert res.metrics["pass1"] == pytest.approx(strict.mean())
    assert res.metrics["pass1_lenient"] == pytest.approx(lenient.mean())
    assert ((lenient == 1) & (strict == 0)).any()  # the random forms include lenient-only answers
    assert [s["correct_lenient"] for s in res.samples] == [bool(v) for v in lenient.ravel()]
    assert [s["correct"] for s in res.samples] == [bool(v) for v in strict.ravel()]
    assert f"pass@{k}_lenient" in res.metrics and res.settings["answer"] == mode
    assert "strict (<answer> tags)" in res.summary()


def test_lenient_majority_vote_hand_computed(tok):
    texts = [["\\boxed{4}", "\\boxed{4}", "\\boxed{5}", "<answer>5</answer>"]]
    res = evaluate(
        Scripted(texts), tok, [{"question": "2+2", "answer": "4"}], accuracy="math", k=4,
        answer="boxed", n_boot=0, template="plain",
    )  # fmt: skip
    assert res.metrics["pass1"] == 0.0 and res.metrics["cons@4"] == 0.0  # strict: only "5" in tags
    assert res.metrics["pass1_lenient"] == 0.5 and res.metrics["cons@4_lenient"] == 1.0
    assert "pass1_lenient" not in evaluate(
        Scripted(texts), tok, [{"question": "2+2", "answer": "4"}], accuracy="math", k=4,
        n_boot=0, template="plain",
    ).metrics  # fmt: skip


def test_fit_to_context_rule():
    assert fit_to_context([10, 20], 100, None) == ([0, 1], 100)
    assert fit_to_context([10, 20, 500], 100, 512) == ([0, 1], 100)  # 500 + 100 > 512: skipped
    # max_new larger than the context: prompts keep room for context // 2, then max_new is what fits
    assert fit_to_context([100, 250, 300], 1024, 512) == ([0, 1], 262)
    with pytest.raises(ValueError, match="no prompt fits the model's 512-token context"):
        fit_to_context([400, 500], 1024, 512)


def test_overlong_prompts_are_skipped_and_counted(tok):
    from aha.models.tiny import tiny_model

    model = tiny_model(len(tok), seed=0)
    context = model_context(Scripted([], model=model))
    assert context == model.config.max_position_embeddings
    rows = [
        {"question": "1+1", "answer": "2"},
        {"question": "x" * (context + 5), "answer": "1"},  # longer than the whole context
        {"question": "2+2", "answer": "4"},
    ]
    engine = Scripted([["<answer>2</answer>"] * 2, ["<answer>5</answer>"] * 2], model=model)
    lines = []
    res = evaluate(
        engine, tok, rows, accuracy="math", k=2, n_boot=0, template="plain",
        context=context, max_tokens=16, log=lines.append,
    )  # fmt: skip
    assert res.n_problems == 2 and res.settings["skipped_prompts"] == 1
    assert [s["problem"] for s in res.samples] == [0, 0, 2, 2] and res.metrics["pass1"] == 0.5
    assert all(n + m <= context for n, m in engine.prompt_lengths)
    assert any("1 of 3 prompts skipped" in line for line in lines)
    # the progress counts the problems really sampled
    assert "eval: sampling 2 problems x 2" in lines
    assert not any("->" in line for line in lines)  # max_new_tokens unchanged: not said to change
    assert "1 skipped: prompt too long" in res.summary()
    # the training loop's held-out eval: the note once, not as the heartbeat's status
    notes, beats = [], []
    # a prompt that leaves less room than max_tokens' 600
    long = [{"question": "y" * (context // 2 - 20), "answer": "3"}]
    evaluate(
        Scripted([["<answer>3</answer>"] * 2], model=model), tok, long, accuracy="math", k=2,
        n_boot=0, template="plain", context=context, max_tokens=600, log=beats.append,
        notice=notes.append,
    )  # fmt: skip
    assert len(notes) == 1 and "sampling.max_new_tokens 600 -> " in notes[0]
    assert not any("max_new_tokens" in b for b in beats)


def test_chat_template_notice_and_named_system():
    from aha.data.templates import R1_ZERO_SYSTEM, render_prompt, template_notice

    class ChatTok:
        chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    line = template_notice(ChatTok(), "r1-zero", "SmolLM2")
    assert (
        "SmolLM2 has a chat template" in line and "task.template=chat task.system=r1-zero" in line
    )
    assert (
        template_notice(ChatTok(), "chat") is None and template_notice(object(), "r1-zero") is None
    )
    text = render_prompt("2+2?", "chat", tokenizer=ChatTok(), system="r1-zero", prefill="<think>")
    assert text == f"<system>{R1_ZERO_SYSTEM}<user>2+2?<assistant><think>"
    assert (
        R1_ZERO_SYSTEM.endswith("<answer> answer here </answer>.") and "User:" not in R1_ZERO_SYSTEM
    )


def test_training_drops_rows_that_cannot_fit(tok):
    from aha.data.procedural import ProceduralRows
    from aha.eval.context import drop_overlong

    rows = [{"question": "q" * n} for n in (5, 40, 10, 30)]
    render = lambda q: f"Q: {q}\n"  # 4 characters of frame around the question
    kept, dropped = drop_overlong(rows, render, tok, context=40, max_new_tokens=16)
    assert [len(r["question"]) for r in kept] == [5, 10] and dropped == 2  # 34 + 16 > 40
    assert drop_overlong(rows, render, tok, None, 16) == (rows, 0)
    lazy = ProceduralRows(lambda rng: (str(rng.random()), {"question": "x"}), "train", 5, "s")
    assert drop_overlong(lazy, render, tok, 8, 16)[0] is lazy  # generated rows pass as they are
    with pytest.raises(ValueError, match="no training prompt fits the model's 12-token context"):
        drop_overlong(rows, render, tok, 12, 8)
