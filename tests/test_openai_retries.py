"""OpenAIEngine's transport against stand-in servers on 127.0.0.1: retries on 5xx, 429 and dropped connections,
Retry-After honoured, give-up and client errors, timeouts, bounded concurrency, connection reuse, early stop
after a failure, and the one-line error when httpx (the `teacher` extra) is missing."""

import email.utils
import os
import signal
import socket
import sys
import threading
import time

import pytest

from aha.config import ConfigError
from aha.models.tiny import char_tokenizer
from aha.rollout import SamplingParams
from aha.rollout.openai_client import OpenAIEngine, OpenAIError
from aha.rollout.openai_client.transport import retry_after
from openai_fake import DROP, Fake, error, plain

TOK = char_tokenizer()


@pytest.fixture
def rig():
    made = []

    def make(script, delay=0.0, **kw):
        made.append(Fake(script, delay))
        made.append(OpenAIEngine(made[-1].url, "m", TOK, **kw))
        return made[-2], made[-1]

    yield make
    for x in made:
        x.close()


def prompts(*texts):
    return [TOK(t, add_special_tokens=False).input_ids for t in texts]


def test_fails_twice_then_succeeds(rig):
    def script(body, k):
        if k == 1:
            return error(503, "overloaded")
        if k == 2:
            return DROP  # connection closed without an answer
        return plain(body)

    f, eng = rig(script, backoff=0.01, max_retries=3)
    [c] = eng.generate(prompts("x"), SamplingParams())
    assert c.text == "x/0/None" and f.count == 3 and eng.stats["retries"] == 2


def test_429_waits_as_retry_after_says(rig):
    f, eng = rig(
        lambda b, k: error(429, "slow down", {"Retry-After": "1"}) if k == 1 else plain(b),
        backoff=0.001,
    )
    t0 = time.perf_counter()
    eng.generate(prompts("x"), SamplingParams())
    assert f.count == 2 and time.perf_counter() - t0 >= 0.95  # not the 1 ms backoff


def test_retry_after_forms():
    assert retry_after({"retry-after": "2"}, cap=60) == 2.0
    assert retry_after({"retry-after": "120"}, cap=60) == 60.0  # capped at max_backoff
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}, cap=60) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after({"retry-after": date}, cap=60) <= 30
    assert retry_after({"retry-after": "soon"}, cap=60) is None and retry_after({}, cap=60) is None


def test_gives_up_and_client_errors_are_not_retried(rig):
    f, eng = rig(lambda b, k: error(500, "boom"), backoff=0.001, max_retries=2)
    with pytest.raises(OpenAIError, match="gave up after 3 attempts; last error: HTTP 500: boom"):
        eng.generate(prompts("x"), SamplingParams())
    assert f.count == 3
    g, eng = rig(lambda b, k: error(400, "bad   max_tokens\nvalue"), max_retries=5)
    with pytest.raises(OpenAIError, match=r"HTTP 400: bad max_tokens value$"):
        eng.generate(prompts("x"), SamplingParams())
    assert g.count == 1


def test_connection_refused_is_retried_then_named():
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with OpenAIEngine(f"http://127.0.0.1:{port}/v1", "m", TOK, max_retries=1, backoff=0.001) as eng:
        with pytest.raises(OpenAIError, match="gave up after 2 attempts; last error: ConnectError"):
            eng.generate(prompts("x"), SamplingParams())


def test_timeout_is_retried(rig):
    f, eng = rig(plain, delay=0.5, timeout=0.1, max_retries=1, backoff=0.001)
    with pytest.raises(OpenAIError, match="gave up after 2 attempts; last error: ReadTimeout"):
        eng.generate(prompts("x"), SamplingParams())
    time.sleep(0.6)
    assert f.count == 2


def test_concurrency_is_bounded_and_connections_reused(rig):
    f, eng = rig(plain, delay=0.15, concurrency=3)
    t0 = time.perf_counter()
    comps = eng.generate(prompts(*"abcdefgh"), SamplingParams(seed=0))
    assert [c.text[0] for c in comps] == list("abcdefgh")
    assert f.max_in_flight == 3 and time.perf_counter() - t0 < 8 * 0.15
    f.delay = 0
    for _ in range(3):
        eng.generate(prompts(*"abcdef"), SamplingParams())
    # keep-alive: 26 requests over at most 3 connections
    assert f.count == 26 and len(f.connections) <= 3


def test_a_failure_stops_the_others_waiting(rig):
    """Once one request fails for good, requests waiting out a long Retry-After give up at once."""

    def script(body, k):
        if body["prompt"] == "bad":
            time.sleep(0.3)  # fails after the others got their 503
            return error(400, "bad prompt")
        return error(503, "busy", {"Retry-After": "30"})

    f, eng = rig(script, concurrency=3, max_retries=3)
    t0 = time.perf_counter()
    with pytest.raises(OpenAIError, match="bad prompt"):
        eng.generate(prompts("x", "y", "bad"), SamplingParams())
    assert time.perf_counter() - t0 < 5 and f.count == 3


def test_missing_httpx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx -> ImportError
    with pytest.raises(ConfigError, match=r"needs httpx: pip install 'aha-rl\[teacher\]'"):
        OpenAIEngine("http://127.0.0.1:1/v1", "m", TOK)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="must start with http"):
        OpenAIEngine("127.0.0.1:8000/v1", "m", TOK)
    with pytest.raises(ValueError, match="unknown api 'responses'"):
        OpenAIEngine("http://x/v1", "m", TOK, api="responses")


def to_this_thread():
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)


@pytest.mark.parametrize(
    "ctrl_c",
    [lambda: os.kill(os.getpid(), signal.SIGINT), to_this_thread],
    ids=["to the process", "to another thread"],  # the kernel may hand a Ctrl-C to any thread
)
def test_ctrl_c_does_not_wait_for_requests_in_flight(rig, ctrl_c):
    # Python's own Ctrl-C handler, even where the tests run as a background job (which starts with SIGINT ignored)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_mid_request(rig, ctrl_c)
    finally:
        signal.signal(signal.SIGINT, old)


def _ctrl_c_mid_request(rig, ctrl_c):
    f, eng = rig(plain, delay=3.0, max_retries=0)
    threading.Timer(0.5, ctrl_c).start()  # Ctrl-C mid-request
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        eng.generate(prompts("x"), SamplingParams())
    assert time.perf_counter() - t0 < 2
    f.delay = 0
    [c] = eng.generate(prompts("y"), SamplingParams())  # still usable afterwards
    assert c.text == "y/0/None"
