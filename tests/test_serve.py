"""`aha serve` + OpenAIEngine over real HTTP on 127.0.0.1: the samples that come back are exactly the local
engine's (same seed), chat works with a template, concurrent requests are batched, bad requests get a 400."""

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import HFEngine, SamplingParams
from aha.rollout.openai_client import OpenAIEngine, OpenAIError
from aha.serve import AhaServer

CHAT = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


class Counting:
    """An engine wrapper that records the prompt count of every generate call."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        return self.engine.generate(prompts, params)


@pytest.fixture(scope="module")
def setup():
    tok = char_tokenizer()
    model = tiny_model(len(tok), seed=7).eval()
    engine = Counting(HFEngine(model, tok))
    with AhaServer(engine, tok, "tiny", port=0, chat_template=CHAT, batch_window_ms=200) as server:
        yield server, engine, HFEngine(model, tok), tok


def ids(tok, *texts):
    return [tok(t, add_special_tokens=False).input_ids for t in texts]


@pytest.mark.parametrize("send_token_ids", [False, True])
def test_round_trip_equals_local_engine(setup, send_token_ids):
    server, _, local, tok = setup
    client = OpenAIEngine(
        server.url, "tiny", tok, send_token_ids=send_token_ids, concurrency=2, logprobs=True
    )
    params = SamplingParams(
        n=3, temperature=1.0, max_tokens=12, seed=11, stop_token_ids=[tok.eos_token_id]
    )
    prompts = ids(tok, "What is 2+2?", "Hi")
    remote = client.generate(prompts, params)
    assert len(remote) == 6 and [c.prompt_index for c in remote] == [0, 0, 0, 1, 1, 1]
    for i, p in enumerate(prompts):  # the client seeds prompt i with seed + i
        want = local.generate(
            [p],
            SamplingParams(
                n=3, temperature=1.0, max_tokens=12, seed=11 + i, stop_token_ids=[tok.eos_token_id]
            ),
        )
        for r, w in zip(remote[3 * i : 3 * i + 3], want):
            assert (
                r.token_ids == w.token_ids
                and r.text == w.text
                and r.finish_reason == w.finish_reason
            )
            assert r.logprobs == pytest.approx(w.logprobs, abs=1e-6) and r.meta["logprobs"]


def test_chat_round_trip(setup):
    server, _, local, tok = setup
    client = OpenAIEngine(server.url, "tiny", tok, api="chat", system="sys")
    [r] = client.generate(ids(tok, "hello"), SamplingParams(max_tokens=8, temperature=0))
    [w] = local.generate(
        ids(tok, "<system>sys|<user>hello|<assistant>"),
        SamplingParams(max_tokens=8, temperature=0, stop_token_ids=[tok.eos_token_id]),
    )
    assert r.text == w.text and r.token_ids == w.token_ids


def post(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_raw_api_shape_stop_strings_and_errors(setup):
    server, _, local, tok = setup
    code, out = post(
        server.url + "/completions",
        {"prompt": ["ab", "cd"], "max_tokens": 6, "temperature": 0, "logprobs": 0, "model": "tiny"},
    )
    assert code == 200 and out["object"] == "text_completion" and len(out["choices"]) == 2
    want = local.generate(
        ids(tok, "ab", "cd"),
        SamplingParams(max_tokens=6, temperature=0, stop_token_ids=[tok.eos_token_id]),
    )
    assert [c["text"] for c in out["choices"]] == [w.text for w in want]
    assert out["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": sum(len(w.token_ids) for w in want),
        "total_tokens": 4 + sum(len(w.token_ids) for w in want),
    }
    req = {"prompt": "ab", "max_tokens": 12, "temperature": 1.0, "seed": 3}
    text = post(server.url + "/completions", req)[1]["choices"][0]["text"]
    cut = next(k for k in range(1, len(text) - 1) if text.find(text[k : k + 2]) == k)
    out = post(server.url + "/completions", {**req, "stop": ["@@", text[cut : cut + 2]]})[1][
        "choices"
    ][0]
    assert (
        out["text"] == text[:cut] and out["finish_reason"] == "stop"
    )  # cut before the stop string
    assert tok.decode(out["token_ids"]).startswith(text[:cut]) and len(out["token_ids"]) == cut + 1
    for body, msg in [
        ({"prompt": "a", "stream": True}, "stream"),
        ({"prompt": "a", "model": "gpt-9"}, "not served"),
        ({"prompt": 5}, "'prompt' must be"),
        ({"prompt": "a", "temperature": -1}, "temperature"),
    ]:
        code, out = post(server.url + "/completions", body)
        assert code == 400 and msg in out["error"]["message"], (body, out)
    code, out = post(server.url + "/nope", {})
    assert code == 404
    with urllib.request.urlopen(server.url + "/models", timeout=10) as resp:
        assert json.loads(resp.read())["data"][0]["id"] == "tiny"
    with pytest.raises(OpenAIError, match="HTTP 400.*not served"):
        OpenAIEngine(server.url, "other", tok).generate(ids(tok, "a"), SamplingParams(max_tokens=2))


def test_concurrent_unseeded_requests_share_a_generate_call(setup):
    server, engine, _, tok = setup
    engine.calls.clear()
    client = OpenAIEngine(server.url, "tiny", tok, concurrency=4)
    comps = client.generate(ids(tok, "a", "b", "c", "d"), SamplingParams(max_tokens=4))
    assert [c.prompt_index for c in comps] == [0, 1, 2, 3]
    assert sum(engine.calls) == 4 and len(engine.calls) < 4  # batched within the 200 ms window


def test_chat_without_template_is_a_400():
    tok = char_tokenizer()
    with AhaServer(HFEngine(tiny_model(len(tok)), tok), tok, "t", port=0) as server:
        code, out = post(
            server.url + "/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
        )
    assert code == 400 and "chat template" in out["error"]["message"]


def test_cmd_serve_process_answers_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from aha.serve import cmd_serve; "
            "sys.exit(cmd_serve(['tiny-random', 'port=0', 'name=tr', 'device=cpu']))",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "serving tiny-random as 'tr' at http://127.0.0.1:" in line, (
            proc.stderr.read() if not line else line
        )
        url = line.split(" at ")[1].split()[0]
        code, out = post(url + "/completions", {"prompt": "hi", "max_tokens": 3, "model": "tr"})
        assert code == 200 and out["model"] == "tr"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
