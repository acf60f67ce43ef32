"""OpenAIEngine against a scripted fake server over real HTTP: retries with backoff, give-up, concurrency bound,
one-line errors, and the resumable request cache (a crash mid-call regenerates nothing already received)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aha.models.tiny import char_tokenizer
from aha.rollout import SamplingParams
from aha.rollout.openai_client import OpenAIEngine, OpenAIError

TOK = char_tokenizer()


class Fake:
    """A /v1/completions server whose answer to each request is decided by `script(body, count) -> (code, obj)`."""

    def __init__(self, script, delay: float = 0.0):
        self.script, self.delay, self.count, self.bodies = script, delay, 0, []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.count += 1
                    n = fake.count
                    fake.bodies.append(body)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay)
                    code, obj, headers = fake.script(body, n)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1
                data = json.dumps(obj).encode()
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(body, text=None):
    """A well-formed reply: choice j of prompt "P" is "P/j/seed"."""
    choices = [
        {
            "index": j,
            "text": text or f"{body['prompt']}/{j}/{body.get('seed')}",
            "finish_reason": "stop",
        }
        for j in range(body["n"])
    ]
    return 200, {"choices": choices}, {}


@pytest.fixture
def fake():
    servers = []

    def make(script, delay=0.0):
        servers.append(Fake(script, delay))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def prompts(*texts):
    return [TOK(t, add_special_tokens=False).input_ids for t in texts]


def test_completions_payload_and_parsing(fake):
    f = fake(lambda b, n: ok(b))
    eng = OpenAIEngine(f.url, "teacher", TOK, concurrency=2)
    comps = eng.generate(
        prompts("ab", "cd"),
        SamplingParams(
            n=2, temperature=0.7, max_tokens=9, seed=5, stop_token_ids=[TOK.eos_token_id]
        ),
    )
    assert [c.text for c in comps] == [
        "ab/0/5",
        "ab/1/5",
        "cd/0/6",
        "cd/1/6",
    ]  # prompt-major, seed + i
    assert [c.prompt_index for c in comps] == [0, 0, 1, 1]
    c = comps[0]
    assert c.token_ids == prompts("ab/0/5")[0] + [TOK.eos_token_id] and c.finish_reason == "stop"
    assert (
        len(c.logprobs) == len(c.token_ids) and c.meta["logprobs"] is False
    )  # server sent none: NaN
    body = sorted(f.bodies, key=lambda b: b["prompt"])[0]
    assert body == {
        "model": "teacher",
        "max_tokens": 9,
        "temperature": 0.7,
        "top_p": 1.0,
        "n": 2,
        "seed": 5,
        "stop_token_ids": [TOK.eos_token_id],
        "prompt": "ab",
        "logprobs": 1,
    }
    eng_ids = OpenAIEngine(f.url, "teacher", TOK, send_token_ids=True, vllm_extensions=False)
    eng_ids.generate(prompts("ab"), SamplingParams(max_tokens=3))
    assert f.bodies[-1]["prompt"] == prompts("ab")[0] and "stop_token_ids" not in f.bodies[-1]
    with pytest.raises(ValueError, match="top_k"):
        eng_ids.generate(prompts("ab"), SamplingParams(top_k=5))


def test_retries_with_backoff_then_succeeds(fake):
    def script(body, n):
        if n == 1:
            return 503, {"error": {"message": "overloaded"}}, {}
        if n == 2:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        return ok(body)

    f = fake(script)
    eng = OpenAIEngine(f.url, "m", TOK, backoff=0.01, max_retries=3)
    [c] = eng.generate(prompts("x"), SamplingParams())
    assert c.text == "x/0/None" and f.count == 3 and eng.stats["retries"] == 2


def test_gives_up_and_client_errors_are_not_retried(fake):
    f = fake(lambda b, n: (500, {"error": {"message": "boom"}}, {}))
    eng = OpenAIEngine(f.url, "m", TOK, backoff=0.001, max_retries=2)
    with pytest.raises(OpenAIError, match="gave up after 3 attempts; last error: HTTP 500: boom"):
        eng.generate(prompts("x"), SamplingParams())
    assert f.count == 3
    g = fake(lambda b, n: (400, {"error": {"message": "bad   max_tokens\nvalue"}}, {}))
    with pytest.raises(OpenAIError, match=r"HTTP 400: bad max_tokens value$"):
        OpenAIEngine(g.url, "m", TOK, max_retries=5).generate(prompts("x"), SamplingParams())
    assert g.count == 1


def test_timeout_is_retried(fake):
    f = fake(lambda b, n: ok(b), delay=0.5)
    eng = OpenAIEngine(f.url, "m", TOK, timeout=0.1, max_retries=1, backoff=0.001)
    with pytest.raises(OpenAIError, match="gave up after 2 attempts"):
        eng.generate(prompts("x"), SamplingParams())
    time.sleep(0.6)
    assert f.count == 2


def test_concurrency_is_bounded(fake):
    f = fake(lambda b, n: ok(b), delay=0.15)
    eng = OpenAIEngine(f.url, "m", TOK, concurrency=3)
    t0 = time.perf_counter()
    comps = eng.generate(prompts(*"abcdefgh"), SamplingParams(seed=0))
    assert [c.text[0] for c in comps] == list("abcdefgh")
    assert f.max_in_flight == 3 and time.perf_counter() - t0 < 8 * 0.15


def test_cache_resumes_without_regenerating(fake, tmp_path):
    cache = tmp_path / "requests.jsonl"
    fail = {"on": True}

    def script(body, n):
        if fail["on"] and body["prompt"] == "c":
            return 400, {"error": {"message": "crash"}}, {}
        return ok(body)

    f = fake(script)
    params = SamplingParams(n=2, seed=1)
    with pytest.raises(OpenAIError, match="crash"):
        OpenAIEngine(f.url, "m", TOK, cache_path=cache, concurrency=1).generate(
            prompts("a", "b", "c", "d"), params
        )
    got = {b["prompt"] for b in f.bodies if b["prompt"] != "c"}
    assert got and len(cache.read_text().splitlines()) == len(got)  # every received answer was kept
    with cache.open("a") as fh:
        fh.write('{"key": "torn')  # a crash while writing a line
    fail["on"] = False
    before = len(f.bodies)
    eng = OpenAIEngine(f.url, "m", TOK, cache_path=cache)
    comps = eng.generate(prompts("a", "b", "c", "d"), params)
    assert [c.text for c in comps] == [
        f"{p}/{j}/{1 + i}" for i, p in enumerate("abcd") for j in range(2)
    ]
    asked = [b["prompt"] for b in f.bodies[before:]]
    assert sorted(asked) == sorted(set("abcd") - got) and eng.stats["cache_hits"] == len(got)
    # an identical request later in the same run is a new occurrence: fresh samples, not the cached ones
    eng.generate(prompts("a"), params)
    assert f.bodies[-1]["prompt"] == "a"


def test_chat_api_payload_and_reasoning(fake):
    def script(body, n):
        return (
            200,
            {
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "length",
                        "message": {
                            "role": "assistant",
                            "content": "<answer>4</answer>",
                            "reasoning_content": "2+2=4",
                        },
                    }
                ]
            },
            {},
        )

    f = fake(script)
    eng = OpenAIEngine(f.url, "m", TOK, api="chat", system="be brief")
    [c] = eng.generate(prompts("2+2?"), SamplingParams(max_tokens=5))
    assert f.bodies[0]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "2+2?"},
    ]
    assert c.text == "<think>\n2+2=4\n</think>\n<answer>4</answer>" and c.finish_reason == "length"
    assert c.token_ids == prompts(c.text)[0]  # no eos: it did not stop
