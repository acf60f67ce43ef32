"""`aha eval` on the command line: benchmark defaults, a served model scored through its OpenAI API with the same
verifier (a scripted stand-in server with hand-computed figures; `aha serve` itself), --answer and --threads."""

import json
import re

import pytest

import openai_fake  # tests/ is on sys.path
from aha.cli import main
from aha.config import ConfigError, load_config
from aha.eval.run import EvalConfig


def cfg_of(*overrides):
    return load_config(EvalConfig, None, list(overrides))


def test_benchmark_defaults_and_endpoint_settings():
    assert cfg_of("task.name=math500").k == 4 and cfg_of("task.name=aime24").k == 16
    assert cfg_of("task.name=amc23", "k=2").k == 2 and cfg_of("task.name=countdown").k == 4
    c = cfg_of("endpoint=http://127.0.0.1:9/v1", "model.path=served")
    assert c.engine == "openai" and c.openai.base_url == "http://127.0.0.1:9/v1"
    assert c.openai.model == "served" and c.answer == "auto"
    with pytest.raises(ConfigError, match="'engine': is hf but an endpoint is given"):
        cfg_of("endpoint=http://127.0.0.1:9/v1", "engine=hf")
    with pytest.raises(ConfigError, match="'endpoint': got 'localhost:9'; give the API's URL"):
        cfg_of("endpoint=localhost:9")
    with pytest.raises(
        ConfigError, match="'answer'.*choose one of: auto, tags, boxed, last-number"
    ):
        cfg_of("answer=loose")
    with pytest.raises(ConfigError, match="'model.threads': must be >= 1"):
        cfg_of("model.threads=0")


ROWS = [
    {"question": "What is 2+3?", "answer": "#### 5"},
    {"question": "What is 4+4?", "answer": "#### 8"},
]
# per question: the k=3 samples the stand-in server answers (strict: <answer> tags; lenient: last number)
ANSWERS = {
    "What is 2+3?": ["<think>2+3</think> <answer>5</answer>", "It is 5.", "It is 6."],
    "What is 4+4?": ["<answer>9</answer>", "<answer>8</answer> I said 8", "so 4+4 = 7"],
}


def script(body, count):
    question = next(q for q in ANSWERS if q in body["prompt"])
    choices = [
        {"index": j, "text": text, "finish_reason": "stop"}
        for j, text in enumerate(ANSWERS[question][: body["n"]])
    ]
    return 200, {"object": "text_completion", "choices": choices}, {}


def test_a_served_model_is_scored_by_the_same_verifier(tmp_path, capsys):
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    server = openai_fake.Fake(script)
    try:
        code = main(
            ["eval", "--endpoint", server.url, "--model", "served-7b", "--tokenizer", "tiny-random",
             "--task", "gsm8k", "task.options.path=" + str(data), "--k", "3", "--answer",
             "last-number", "--out", str(tmp_path / "ev"), "n_boot=0", "report=false"]
        )  # fmt: skip
    finally:
        server.close()
    assert code == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    m = res["metrics"]
    # strict: problem 1 has 1/3 right (the tagged 5), problem 2 has 1/3 (the tagged 8)
    assert m["pass1"] == pytest.approx(1 / 3) and m["pass@3"] == 1.0
    # last number: "5", "5", "6" -> 2/3; "9", "8", "7" -> 1/3
    assert m["pass1_lenient"] == pytest.approx(0.5) and m["cons@3_lenient"] == 0.5
    bodies = server.bodies
    assert {b["model"] for b in bodies} == {"served-7b"} and len(bodies) == 2
    assert {(b["temperature"], b["top_p"], b["n"]) for b in bodies} == {(0.6, 0.95, 3)}
    out = capsys.readouterr().out
    assert re.search(r"pass1 0\.3333 strict \(<answer> tags\), 0\.5 lenient \(last-number\)", out)
    assert "served-7b@http://127.0.0.1" in out and "results.json" in out


def test_eval_against_aha_serve(tmp_path):
    pytest.importorskip("fastapi")
    from aha.models.tiny import char_tokenizer, tiny_model
    from aha.rollout import HFEngine
    from aha.serve import AhaServer

    tok = char_tokenizer()
    model = tiny_model(len(tok), seed=3).eval()
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with AhaServer(HFEngine(model, tok), tok, "tiny") as server:
        code = main(
            ["eval", "--endpoint", server.url, "--model", "tiny", "--tokenizer", "tiny-random",
             "--task", "gsm8k", "task.options.path=" + str(data), "--k", "2",
             "--max-new-tokens", "6", "--out", str(tmp_path / "ev"), "n_boot=0", "report=false"]
        )  # fmt: skip
    assert code == 0
    samples = [json.loads(x) for x in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(s["n_tokens"] <= 6 for s in samples)
    assert {"answer_lenient", "correct_lenient"} <= set(
        samples[0]
    )  # gsm8k: last number beside tags


def test_local_eval_flags_end_to_end(tmp_path, monkeypatch):
    import torch

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n))
    code = main(
        ["eval", "--model", "tiny-random", "--task", "gsm8k", "task.options.path=" + str(data),
         "--k", "1", "--max-new-tokens", "4", "--answer", "boxed", "--threads", "1",
         "--engine", "hf", "task.template=plain", "--out", str(tmp_path / "ev"), "n_boot=0",
         "report=false"]
    )  # fmt: skip
    assert code == 0 and seen == [1]
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["settings"]["answer"] == "boxed" and "pass1_lenient" in res["metrics"]
    assert res["settings"]["max_tokens"] == 4 and res["k"] == 1
