"""`aha serve` under abuse (issue 17, items 10-12): a bad token id or a failing request never fails the requests
batched with it, sizes are capped to the context, a client that leaves has its generation abandoned, 200
concurrent connections are all served, slow clients time out, malformed values are 400s (not 500s)."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import Completion, HFEngine

TOK = char_tokenizer()
MODEL = tiny_model(len(TOK), seed=1).eval()


class Slow:
    """A fake engine: one token ("a") per completion every `delay` s, through on_tokens; records its calls.
    A prompt containing `poison` makes the whole call raise, as a broken input would."""

    def __init__(self, delay=0.0, poison=None):
        self.delay, self.poison, self.model = delay, poison, MODEL
        self.calls, self.done = [], threading.Event()

    def generate(self, prompts, params, on_tokens=None):
        self.done.clear()
        self.calls.append(len(prompts))
        if any(self.poison in p for p in prompts):
            raise RuntimeError("poisoned batch")
        n = len(prompts) * params.n
        toks, reason = [[] for _ in range(n)], ["length"] * n
        a = TOK("a", add_special_tokens=False).input_ids[0]
        for _ in range(params.max_tokens):
            live = [
                i for i in range(n) if reason[i] == "length" and len(toks[i]) < params.max_tokens
            ]
            if not live:
                break
            time.sleep(self.delay)
            for i in live:
                toks[i].append(a)
                if on_tokens is not None and on_tokens(i, [a]) is False:
                    reason[i] = "abort"
        self.reasons = reason
        self.done.set()
        return [Completion(i // params.n, t, [-1.0] * len(t), "a" * len(t), r) for i, (t, r) in enumerate(zip(toks, reason))]  # fmt: skip


def serve(engine, **kw):
    from aha.serve import AhaServer

    return AhaServer(engine, TOK, "t", port=0, **kw)


def post(url, body, timeout=60):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url + "/completions", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def raw(port, data: bytes, timeout=10.0) -> bytes:
    """Send bytes, return all the server sends until it closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def request(body: bytes, length=None) -> bytes:
    n = len(body) if length is None else length
    return (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(n).encode() + b"\r\n\r\n" + body)  # fmt: skip


def concurrently(fn, args):
    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(fn, args))


def test_a_bad_token_id_is_a_400_and_does_not_fail_its_batch():
    with serve(HFEngine(MODEL, TOK), batch_window_ms=300) as s:
        bodies = [{"prompt": [5, 6], "max_tokens": 3}, {"prompt": [5, 10**6], "max_tokens": 3},
                  {"prompt": [7, 8], "max_tokens": 3}, {"prompt": [5, -1], "max_tokens": 3}]  # fmt: skip
        codes = [c for c, _ in concurrently(lambda b: post(s.url, b), bodies)]
    assert codes == [200, 400, 200, 400]


def test_an_engine_failure_stays_with_its_request():
    engine = Slow(poison=9)
    with serve(engine, batch_window_ms=300) as s:
        bodies = [{"prompt": [5, 6], "max_tokens": 2}, {"prompt": [5, 9], "max_tokens": 2},
                  {"prompt": [7, 8], "max_tokens": 2}]  # fmt: skip
        out = concurrently(lambda b: post(s.url, b), bodies)
    assert [c for c, _ in out] == [200, 500, 200]
    assert "poisoned batch" in out[1][1]["error"]["message"]
    assert engine.calls[0] == 3 and sorted(engine.calls[1:]) == [1, 1, 1]  # batched, then alone


def test_an_engine_failure_in_a_stream_is_an_error_event():
    import openai

    with serve(Slow(poison=9)) as s:
        client = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0)
        stream = client.completions.create(model="t", prompt=[5, 9], max_tokens=2, stream=True)
        with pytest.raises(openai.APIError, match="poisoned batch"):
            list(stream)
        with pytest.raises(openai.NotFoundError, match="no route"):
            client.get(s.url + "/nope", cast_to=object)


def test_sizes_are_capped_to_the_context():
    with serve(Slow()) as s:
        t = time.monotonic()
        cases = [{"prompt": "hi", "max_tokens": 10**9}, {"prompt": "x" * 2000, "max_tokens": 1},
                 {"prompt": "x" * 10_000_000, "max_tokens": 1}, {"prompt": "hi", "n": 10**6, "max_tokens": 1}]  # fmt: skip
        for body in cases:
            code, out = post(s.url, body)
            assert code == 400 and out["error"]["param"] in ("max_tokens", "prompt", "n"), out
        assert time.monotonic() - t < 30  # the 10 MB prompt is refused, not generated from
        code, out = post(s.url, {"prompt": "x" * 1000})  # no max_tokens: what fits (1024 - 1000)
        assert code == 200 and out["usage"]["completion_tokens"] == 24


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_disconnects_has_its_generation_abandoned(stream):
    engine = Slow(delay=0.02)  # 500 tokens: 10 s if nobody stops it
    with serve(engine) as s:
        body = json.dumps({"prompt": "hi", "max_tokens": 500, "stream": stream}).encode()
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(request(body))
            time.sleep(0.5)  # it is generating now
        assert engine.done.wait(timeout=5), "generation went on after the client left"
        assert engine.reasons == ["abort"]
        assert post(s.url, {"prompt": "hi", "max_tokens": 2})[0] == 200  # and the server goes on


def test_200_concurrent_connections_are_all_served():
    with serve(Slow(), batch_window_ms=20) as s:
        t = time.monotonic()
        out = concurrently(
            lambda i: post(s.url, {"prompt": [5 + i % 50], "max_tokens": 2}), list(range(200))
        )
        took = time.monotonic() - t
    assert [c for c, _ in out] == [200] * 200, took


def test_slow_clients_time_out():
    with serve(Slow(), timeout_s=0.5) as s:
        t = time.monotonic()
        assert raw(s.port, b"") == b""  # connects, sends nothing: closed
        assert raw(s.port, b"POST /v1/completions HTTP/1.1\r\nHo") == b""  # half a request head
        out = raw(s.port, request(b'{"prompt": "hi"', length=100))  # a body that never completes
        assert out.startswith(b"HTTP/1.1 408") and b"did not arrive" in out
        assert time.monotonic() - t < 8
        # a slow request that is generating is not cut by the head deadline
        assert post(s.url, {"prompt": "hi", "max_tokens": 3})[0] == 200


def test_malformed_values_are_400s():
    with serve(Slow()) as s:
        bodies = [b'{"prompt": "hi", "temperature": NaN}', b'{"prompt": "hi", "stop": 123}',
                  b'{"prompt": "hi", "seed": 1000000000000000000000000000000}', b'{"prompt": "hi", "top_p": Infinity}',
                  b'{"prompt": "hi"', b"[1, 2]", b"\xff\xfe", b'{"prompt": "hi", "max_tokens": "5"}']  # fmt: skip
        for body in bodies:
            out = raw(s.port, request(body))
            assert out.startswith(b"HTTP/1.1 400"), (body, out[:200])
        for length in (b"abc", b"-5", b"1, 2"):
            out = raw(
                s.port,
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + length
                + b"\r\n\r\n{}",
            )
            assert out.startswith(b"HTTP/1.1 400"), (length, out[:200])
        assert post(s.url, {"prompt": "hi", "max_tokens": 2})[0] == 200


def test_a_lone_surrogate_is_a_400_and_a_tiny_temperature_is_greedy():
    """A JSON \\ud800 escape parses to a string no tokenizer can encode: a 400 naming it (it was a 500 with a
    traceback). temperature=1e-40 overflowed the logits (a 500): below 1e-5 it samples greedily, as vLLM."""
    with serve(HFEngine(MODEL, TOK)) as s:
        out = raw(s.port, request(b'{"prompt": "a\\ud800", "max_tokens": 2}'))
        assert out.startswith(b"HTTP/1.1 400") and b"lone surrogate \\\\ud800" in out, out[-300:]
        greedy = post(s.url, {"prompt": "ab", "max_tokens": 4, "temperature": 0})
        for t in (1e-40, 5e-324, 1e-6):
            code, body = post(s.url, {"prompt": "ab", "max_tokens": 4, "temperature": t})
            assert code == 200 and body["choices"][0]["text"] == greedy[1]["choices"][0]["text"], (
                body
            )


def test_stopping_the_server_ends_requests_in_flight_with_503s():
    """The stop signal shuts the scheduler down first: a running and a queued request get the 503 JSON error
    and a stream its SSE error event, at once (uvicorn cancelled them after its 3 s grace: plain-text 500s)."""
    engine = Slow(delay=0.05)
    s = serve(engine).start()
    results = {}

    def call(name, body):
        if body.get("stream"):
            req = urllib.request.Request(s.url + "/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=30) as r:
                results[name] = r.read().decode()
        else:
            results[name] = post(s.url, body, timeout=30)

    bodies = {
        "running": {"prompt": "x", "max_tokens": 400, "seed": 1},
        "queued": {"prompt": "y", "max_tokens": 400, "seed": 2},
        "stream": {"prompt": "z", "max_tokens": 400, "seed": 3, "stream": True},
    }
    threads = [threading.Thread(target=call, args=kv) for kv in bodies.items()]
    for t in threads:
        t.start()
        time.sleep(0.3)
    t0 = time.perf_counter()
    s.stop()
    for t in threads:
        t.join(timeout=30)
    assert time.perf_counter() - t0 < 3, "the requests waited for uvicorn's grace period"
    for name in ("running", "queued"):
        code, body = results[name]
        assert code == 503 and body["error"]["type"] == "ServiceUnavailableError", (name, body)
    assert '"code": 503' in results["stream"] or "503" in results["stream"], results["stream"][
        -300:
    ]
