"""evaluate(): scripted completions with hand-computed metrics, and a tiny random model end to end on the CPU."""

import json
import re
from fractions import Fraction

import numpy as np
import pytest

from aha.eval.evaluate import eval_metrics, evaluate, pass_ks
from aha.eval.scoring import cluster_with_runner as _cluster_with_runner
from aha.rollout import Completion


def extract(text):
    found = re.findall(r"<answer>(.*?)</answer>", text, re.S)
    return found[-1].strip() if found else None


def frac(s):
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError, TypeError):
        return None


class FakeResult:
    def __init__(self, scores, names):
        self.scores, self.names = np.asarray(scores, dtype=np.float64), names


class FakeRunner:
    """Stands in for aha.rewards.RewardRunner: accuracy = extracted answer equals the reference (as a fraction
    for "math"), format = starts with <think> and ends with </answer>."""

    def __init__(self, accuracy="exact"):
        self.names, self.calls, self.closed = [accuracy, "format"], 0, False

    def score(self, completions, rows):
        self.calls += 1
        out = []
        for text, row in zip(completions, rows):
            ans = extract(text)
            if self.names[0] == "math":
                ok = ans is not None and frac(ans) is not None and frac(ans) == frac(row["answer"])
            else:
                ok = ans == row["answer"]
            out.append(
                [float(ok), float(text.startswith("<think>") and text.endswith("</answer>"))]
            )
        return FakeResult(out, self.names)

    def close(self):
        self.closed = True


class ScriptedEngine:
    """Returns scripted (text, n_tokens, finish_reason) for each prompt, in the order evaluate() asks."""

    def __init__(self, script):
        self.script, self.next = script, 0

    def generate(self, prompt_token_ids, params):
        out = []
        for i in range(len(prompt_token_ids)):
            samples = self.script[self.next]
            self.next += 1
            assert len(samples) == params.n
            for text, n_tok, reason in samples:
                out.append(
                    Completion(
                        prompt_index=i,
                        token_ids=[5] * n_tok,
                        logprobs=[0.0] * n_tok,
                        text=text,
                        finish_reason=reason,
                    )
                )
        return out


@pytest.fixture(scope="module")
def tok():
    from aha.models.tiny import char_tokenizer

    return char_tokenizer()


ROWS = [
    {"question": "2+2", "answer": "4"},
    {"question": "4+5", "answer": "9"},
    {"question": "0+1", "answer": "1"},
]
SCRIPT = [
    [
        (
            "<think>2+2 = 5. Wait, 2+2 = 4</think><answer>4</answer>",
            10,
            "stop",
        ),  # correct, reflects, revises
        ("<think>x</think><answer>4</answer>", 20, "stop"),  # correct
        ("<think>x</think><answer>5</answer>", 30, "stop"),
        ("no tags 4", 40, "stop"),
    ],  # no answer, no format
    [
        ("<answer>8</answer>", 5, "stop"),  # no format
        ("<think>y</think><answer>9</answer>", 5, "stop"),
        ("<think>y</think><answer>8</answer>", 5, "stop"),
        ("<think>let me check</think><answer>9</answer>", 5, "stop"),
    ],  # 8 and 9 tie: 8 came first
    [("garbage", 50, "length")] * 4,  # all None, all truncated
]


def test_pass_ks():
    assert pass_ks(1) == [1] and pass_ks(4) == [1, 2, 4] and pass_ks(6) == [1, 2, 4, 6]


def test_evaluate_scripted_hand_computed(tok, tmp_path):
    runner = FakeRunner()
    res = evaluate(
        ScriptedEngine(SCRIPT),
        tok,
        ROWS,
        accuracy="exact",
        reward_runner=runner,
        k=4,
        template=lambda q: f"Q: {q}\nA:",
        extract=extract,
        batch_size=2,
        n_boot=200,
        out_dir=tmp_path,
    )
    m = res.metrics
    assert m["pass1"] == pytest.approx(1 / 3)  # (2/4 + 2/4 + 0) / 3
    assert m["pass@1"] == pytest.approx(1 / 3)
    assert m["pass@2"] == pytest.approx(5 / 9)  # (1 - C(2,2)/C(4,2)) = 5/6 twice, 0 once
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert m["cons@4"] == pytest.approx(1 / 3)  # "4" wins; "8" wins the tie; all-None loses
    assert m["format"] == pytest.approx(0.5)  # 3/4, 3/4, 0
    assert m["len_mean"] == pytest.approx(320 / 12)
    assert m["len_median"] == pytest.approx(25.0)  # 5,5,5,5,10,20 | 30,40,50,50,50,50
    assert m["len_max"] == 50
    assert m["truncated"] == pytest.approx(1 / 3)
    assert m["reflection_rate"] == pytest.approx(2 / 12)
    assert m["revision_rate"] == pytest.approx(1 / 12)
    assert not runner.closed  # a caller's runner stays open
    for name, (lo, hi) in res.ci.items():
        assert lo <= m[name] + 1e-12 and m[name] <= hi + 1e-12, name
    assert res.ci["len_max"][1] == 50

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["k"] == 4 and results["n_problems"] == 3
    assert results["metrics"]["pass1"] == pytest.approx(1 / 3)
    assert results["settings"]["temperature"] == 0.6 and results["settings"]["top_p"] == 0.95
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert len(recs) == 12 and set(recs[0]) == set(recs[-1])
    assert (
        recs[0]["prompt"] == "Q: 2+2\nA:"
        and recs[0]["answer"] == "4"
        and recs[0]["correct"] is True
    )
    assert (
        recs[3]["answer"] is None and recs[3]["majority"] is False and recs[0]["majority"] is True
    )
    assert [r["majority"] for r in recs[4:8]] == [True, False, False, False]
    assert recs[8]["finish_reason"] == "length" and recs[8]["n_tokens"] == 50
    assert recs[0]["reflection"] and recs[0]["revision"] and not recs[1]["reflection"]


def test_samples_jsonl_opens_in_pandas(tok, tmp_path):
    pd = pytest.importorskip("pandas")
    evaluate(
        ScriptedEngine(SCRIPT),
        tok,
        ROWS,
        accuracy="exact",
        reward_runner=FakeRunner(),
        k=4,
        template=lambda q: q,
        extract=extract,
        n_boot=0,
        out_dir=tmp_path,
    )
    df = pd.read_json(tmp_path / "samples.jsonl", lines=True)
    assert len(df) == 12 and df["correct"].sum() == 4


def test_cluster_with_runner_matches_greedy_vote():
    runner = FakeRunner("math")
    answers = [["1/2", "7", "0.5", None, " 7", "2/4"], [None, None], ["3"]]
    labels = _cluster_with_runner(answers, runner, col=0)
    assert labels == [[0, 1, 0, None, 1, 0], [None, None], [0]]
    assert runner.calls == 1  # round 1: {1/2 vs 7, 0.5, 2/4}; round 2 has a lone rep: no call


def test_evaluate_math_cons_uses_verifier_equivalence(tok):
    script = [
        [
            ("<think>a</think><answer>3</answer>", 3, "stop"),
            ("<think>a</think><answer>1/2</answer>", 3, "stop"),
            ("<think>a</think><answer>0.5</answer>", 3, "stop"),
            ("<think>a</think><answer>2/4</answer>", 3, "stop"),
        ]
    ]
    rows = [{"question": "half", "answer": "1/2"}]
    res = evaluate(
        ScriptedEngine(script),
        tok,
        rows,
        accuracy="math",
        reward_runner=FakeRunner("math"),
        k=4,
        template=lambda q: q,
        extract=extract,
        n_boot=0,
    )
    assert res.metrics["cons@4"] == 1.0 and res.metrics["pass1"] == 0.75
    strict = evaluate(
        ScriptedEngine(script),
        tok,
        rows,
        accuracy="math",
        reward_runner=FakeRunner("math"),
        k=4,
        template=lambda q: q,
        extract=extract,
        n_boot=0,
        equivalent=lambda a, b: a == b,
    )
    assert strict.metrics["cons@4"] == 0.0  # string equality: all singletons, "3" first


def test_evaluate_rejects_bad_inputs(tok):
    with pytest.raises(ValueError, match="no rows"):
        evaluate(ScriptedEngine([]), tok, [], accuracy="exact", reward_runner=FakeRunner())
    with pytest.raises(ValueError, match="no 'math' reward"):
        evaluate(
            ScriptedEngine(SCRIPT),
            tok,
            ROWS,
            accuracy="math",
            reward_runner=FakeRunner("exact"),
            k=4,
            template=lambda q: q,
            extract=extract,
        )


def test_tiny_model_end_to_end(tok, tmp_path):
    import torch

    from aha.models.tiny import tiny_model
    from aha.rollout import HFEngine

    torch.set_num_threads(1)
    engine = HFEngine(tiny_model(len(tok), hidden_size=32), tok)
    kw = dict(
        accuracy="exact",
        k=3,
        max_tokens=6,
        template=lambda q: f"Q: {q}\nA:",
        extract=extract,
        seed=7,
    )
    res = evaluate(
        engine, tok, ROWS[:2], reward_runner=FakeRunner(), n_boot=50, out_dir=tmp_path, **kw
    )
    assert len(res.samples) == 6 and res.n_problems == 2
    assert all(1 <= s["n_tokens"] <= 6 for s in res.samples)
    assert res.metrics["truncated"] == np.mean(
        [s["finish_reason"] == "length" for s in res.samples]
    )
    assert res.metrics["len_max"] == max(s["n_tokens"] for s in res.samples)
    assert (tmp_path / "results.json").is_file() and len(
        (tmp_path / "samples.jsonl").read_text().splitlines()
    ) == 6
    flat = eval_metrics(engine, tok, ROWS[:2], reward_runner=FakeRunner(), **kw)
    assert {
        "eval/pass1",
        "eval/format",
        "eval/len_mean",
        "eval/reflection_rate",
        "eval/cons@3",
        "eval/pass@3",
    } <= set(flat)
    assert flat["eval/len_mean"] == pytest.approx(
        res.metrics["len_mean"]
    )  # same seed, same samples


def test_tiny_model_with_real_rewards(tok):
    import torch

    from aha.models.tiny import tiny_model
    from aha.rollout import HFEngine

    torch.set_num_threads(1)
    engine = HFEngine(tiny_model(len(tok), hidden_size=32), tok)
    res = evaluate(
        engine, tok, ROWS[:2], accuracy="math", k=2, max_tokens=4, template=lambda q: q, n_boot=0
    )
    assert (
        res.metrics["pass1"] == 0.0 and res.metrics["format"] == 0.0
    )  # 4 random characters cannot be right
    assert len(res.samples) == 4


def test_cluster_with_real_math_verifier():
    from aha.rewards import RewardRunner

    with RewardRunner([("math", 1.0), ("format", 1.0)], num_workers=1) as runner:
        labels = _cluster_with_runner(
            [["\\frac{1}{2}", "3", "0.5", "1/2", None, "9**9**9**9"]], runner, col=0
        )
    assert labels == [[0, 1, 0, 0, None, 5]]


def test_every_end_id_of_the_model_stops_generation(tok):
    """An instruct model lists several end ids in its generation config (Llama-3: <|eot_id|> and
    <|end_of_text|>): evaluation stops at each of them, not only at the tokenizer's eos."""
    from types import SimpleNamespace

    seen = []

    class Engine(ScriptedEngine):
        model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[7, 9]))

        def generate(self, prompt_token_ids, params):
            seen.append(params.stop_token_ids)
            return super().generate(prompt_token_ids, params)

    evaluate(Engine([[("<answer>4</answer>", 3, "stop")]]), tok, ROWS[:1], accuracy="math", k=1)
    assert set(seen[0]) == {7, 9, tok.eos_token_id}


def test_evaluate_counts_reflection_with_the_phrases_given(tok):
    """phrases: the reflection rate counts those (case-insensitive, whole words), not the defaults; a generator
    is read once; empty phrases stop with the one-line error."""
    kw = dict(accuracy="exact", k=4, template=lambda q: q, extract=extract, n_boot=0)
    mine = evaluate(
        ScriptedEngine(SCRIPT),
        tok,
        ROWS,
        reward_runner=FakeRunner(),
        phrases=(p for p in ["LET ME CHECK", "garbage"]),
        **kw,
    )
    assert mine.metrics["reflection_rate"] == pytest.approx(
        5 / 12
    )  # 1 "let me check" + 4 "garbage"
    with pytest.raises(ValueError, match="reflection phrases are empty"):
        evaluate(ScriptedEngine(SCRIPT), tok, ROWS, reward_runner=FakeRunner(), phrases=[" "], **kw)
