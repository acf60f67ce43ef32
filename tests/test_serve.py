"""`aha serve` through the official `openai` client over real HTTP on 127.0.0.1: completions and chat equal the local
engine's samples (same seed), streamed text equals the non-streamed text, n, stop strings, logprobs with real
top-k alternatives, echo, usage, errors as the client's exceptions; OpenAIEngine round trips; and the
`aha serve` process itself (streams, stops on SIGTERM with exit 0, one-line errors, no traceback on disconnects)."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest

from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import HFEngine, SamplingParams
from aha.rollout.openai_client import OpenAIEngine, OpenAIError
from aha.serve import AhaServer
from aha.serve.scoring import score

CHAT = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


class Counting:
    """An engine wrapper that records the prompt count of every generate call."""

    def __init__(self, engine):
        self.engine, self.calls, self.model = engine, [], engine.model

    def generate(self, prompts, params, on_tokens=None):
        self.calls.append(len(prompts))
        return self.engine.generate(prompts, params, on_tokens=on_tokens)


@pytest.fixture(scope="module")
def setup():
    tok = char_tokenizer()
    model = tiny_model(len(tok), seed=7).eval()
    engine = Counting(HFEngine(model, tok))
    with AhaServer(engine, tok, "tiny", chat_template=CHAT, batch_window_ms=200) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
        yield server, client, engine, HFEngine(model, tok), tok, model


def ids(tok, *texts):
    return [tok(t, add_special_tokens=False).input_ids for t in texts]


def local(engine, tok, text, **kw):
    kw.setdefault("stop_token_ids", [tok.eos_token_id])
    return engine.generate(ids(tok, text), SamplingParams(**kw))


def test_completions_equal_the_local_engine_with_real_top_logprobs(setup):
    _, client, _, eng, tok, model = setup
    r = client.completions.create(
        model="tiny", prompt="What is 2+2?", max_tokens=9, n=3, seed=5, logprobs=3
    )
    want = local(eng, tok, "What is 2+2?", n=3, max_tokens=9, seed=5)
    assert [c.text for c in r.choices] == [w.text for w in want] and [
        c.index for c in r.choices
    ] == [0, 1, 2]
    assert [c.finish_reason for c in r.choices] == [w.finish_reason for w in want]
    prompt = ids(tok, "What is 2+2?")[0]
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == sum(len(w.token_ids) for w in want)
    for c, w in zip(r.choices, want):
        lp = c.logprobs
        assert lp.token_logprobs == pytest.approx(w.logprobs, abs=1e-5)
        assert lp.tokens == [tok.decode([t]) for t in w.token_ids]
        _, tops = score(model, prompt + w.token_ids, len(prompt), 1.0, 3)
        for tok_str, d, top in zip(lp.tokens, lp.top_logprobs, tops):
            alts = {tok.decode([a]): v for a, v in top}
            assert tok_str in d and {k: d[k] for k in alts} == pytest.approx(alts, abs=1e-5)
            assert set(d) - set(alts) <= {tok_str}  # the k alternatives plus the sampled token


def test_chat_content_parts_logprobs_and_max_completion_tokens(setup):
    _, client, _, eng, tok, _ = setup
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
    ]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_completion_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=2)  # fmt: skip
    [w] = local(eng, tok, "<system>sys|<user>hello|<assistant>", max_tokens=6, temperature=0)
    c = r.choices[0]
    assert (
        c.message.role == "assistant"
        and c.message.content == w.text
        and r.object == "chat.completion"
    )
    assert [e.logprob for e in c.logprobs.content] == pytest.approx(w.logprobs, abs=1e-5)
    assert all(len(e.top_logprobs) == 2 for e in c.logprobs.content)
    greedy = [e.top_logprobs[0].token == e.token for e in c.logprobs.content]
    assert all(greedy)  # temperature 0: the sampled token is the most likely one


def stream_text(chunks, chat=False):
    texts, finish, usage = {}, {}, None
    for ch in chunks:
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            piece = (c.delta.content or "") if chat else c.text
            texts[c.index] = texts.get(c.index, "") + piece
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return texts, finish, usage


@pytest.mark.parametrize("chat", [False, True])
def test_streamed_text_equals_the_non_streamed_text(setup, chat):
    _, client, _, _, _, _ = setup
    kw = dict(model="tiny", max_tokens=14, n=2, seed=9)
    if chat:
        call, kw["messages"] = client.chat.completions.create, [{"role": "user", "content": "hey"}]
    else:
        call, kw["prompt"] = client.completions.create, "hey"
    full = call(**kw)
    text0 = full.choices[0].message.content if chat else full.choices[0].text
    # a stop string the first sample contains: hold-back and cut are exercised
    stop = [text0[5:7], "@@"]
    full = call(**kw, stop=stop)
    texts, finish, usage = stream_text(
        call(**kw, stop=stop, stream=True, stream_options={"include_usage": True}), chat
    )
    want = [c.message.content if chat else c.text for c in full.choices]
    assert [texts[i] for i in range(2)] == want and full.choices[0].finish_reason == "stop"
    assert [finish[i] for i in range(2)] == [c.finish_reason for c in full.choices]
    assert (
        usage.completion_tokens == full.usage.completion_tokens
        and usage.prompt_tokens == full.usage.prompt_tokens
    )
    # with logprobs a stream sends each choice whole: the same text and logprobs
    chunks = list(call(**kw, stop=stop, stream=True, logprobs=True if chat else 1))
    assert [stream_text(chunks, chat)[0][i] for i in range(2)] == want


def test_fast_engine_behind_the_server_streams_its_rounds_as_the_same_text():
    from aha.rollout import FastEngine

    tok = char_tokenizer()
    model = tiny_model(len(tok), seed=7).eval()
    with AhaServer(FastEngine(model, tok, sync_every=3), tok, "fast") as server:  # 3 tokens a round
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)
        kw = dict(model="fast", prompt="hey", max_tokens=20, n=2, seed=4)
        text0 = client.completions.create(**kw).choices[0].text
        stop = [text0[7:9], "@@"]
        full = client.completions.create(**kw, stop=stop)
        texts, finish, _ = stream_text(client.completions.create(**kw, stop=stop, stream=True))
    assert (
        texts == {i: c.text for i, c in enumerate(full.choices)}
        and full.choices[0].text == text0[: text0.find(stop[0])]
    )
    assert finish == {i: c.finish_reason for i, c in enumerate(full.choices)}


def test_stop_strings_echo_and_prompt_logprobs(setup):
    _, client, _, eng, tok, model = setup
    base = client.completions.create(model="tiny", prompt="abc", max_tokens=12, seed=3)
    text = base.choices[0].text
    cut = next(k for k in range(1, len(text) - 1) if text.find(text[k : k + 2]) == k)
    stop = text[cut : cut + 2]
    r = client.completions.create(
        model="tiny", prompt="abc", max_tokens=12, seed=3, stop=[stop], logprobs=0
    )
    c = r.choices[0]
    assert c.text == text[:cut] and c.finish_reason == "stop" and c.stop_reason == stop
    assert len(c.token_ids) == cut + 2  # the tokens up to the one completing the stop string
    [w] = local(eng, tok, "abc", max_tokens=12, seed=3, stop=(stop,))  # the engine's own cut
    assert (c.token_ids, c.text) == (w.token_ids, w.text)
    assert c.logprobs.token_logprobs == pytest.approx(
        w.logprobs, abs=1e-5
    )  # exactly the kept tokens
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=12, seed=3,
                                  stop=text[cut : cut + 2], extra_body={"include_stop_str_in_output": True})  # fmt: skip
    assert r.choices[0].text == text[: cut + 2]
    e = client.completions.create(model="tiny", prompt="hello", max_tokens=0, echo=True, logprobs=1)
    p = ids(tok, "hello")[0]
    lps, _ = score(model, p, 1, 1.0, 0)
    assert e.choices[0].text == "hello" and e.choices[0].logprobs.token_logprobs[0] is None
    assert e.choices[0].logprobs.token_logprobs[1:] == pytest.approx(lps, abs=1e-5)
    e = client.completions.create(model="tiny", prompt="hello", max_tokens=3, echo=True, seed=1)
    assert e.choices[0].text.startswith("hello") and len(e.choices[0].text) > 5


def test_errors_are_openai_exceptions_with_vllm_shaped_bodies(setup):
    server, client, _, _, _, _ = setup
    cases = [
        (openai.BadRequestError, dict(prompt="a", presence_penalty=1.0), "presence_penalty"),
        (openai.BadRequestError, dict(prompt="a", extra_body={"frobnicate": 1}), "frobnicate"),
        (openai.BadRequestError, dict(prompt="a", max_tokens=10**9), "maximum context length"),
        (openai.BadRequestError, dict(prompt="a" * 1024, max_tokens=1), "maximum context length"),
        (openai.BadRequestError, dict(prompt=[5, 10**6], max_tokens=1), "out of the vocabulary"),
        (openai.NotFoundError, dict(prompt="a", max_tokens=1, model="gpt-9"), "does not exist"),
    ]
    for exc, kw, msg in cases:
        with pytest.raises(exc, match=msg) as e:
            client.completions.create(**{"model": "tiny", **kw})
        err = e.value.body
        assert (
            set(err) >= {"message", "type", "param", "code"} and err["code"] == e.value.status_code
        )
    with pytest.raises(OpenAIError, match="HTTP 404.*does not exist"):
        OpenAIEngine(server.url, "other", char_tokenizer()).generate(
            [[5]], SamplingParams(max_tokens=2)
        )


def test_models_tokenize_detokenize_health(setup):
    server, client, _, _, tok, _ = setup
    assert [m.id for m in client.models.list().data] == ["tiny"] and client.models.retrieve(
        "tiny"
    ).id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    root = server.url[: -len("/v1")]
    t = client.post(f"{root}/tokenize", body={"prompt": "hi"}, cast_to=object)
    assert t["tokens"] == ids(tok, "hi")[0] and t["count"] == 2 and t["max_model_len"] == 1024
    m = client.post(
        f"{root}/tokenize", body={"messages": [{"role": "user", "content": "x"}]}, cast_to=object
    )
    assert tok.decode(m["tokens"]) == "<user>x|<assistant>"
    assert (
        client.post(f"{root}/detokenize", body={"tokens": t["tokens"]}, cast_to=object)["prompt"]
        == "hi"
    )
    assert client.get(f"{root}/health", cast_to=object) == {"status": "ok"}


@pytest.mark.parametrize("send_token_ids", [False, True])
def test_openai_engine_round_trip_equals_local_engine(setup, send_token_ids):
    server, _, _, eng, tok, _ = setup
    client = OpenAIEngine(server.url, "tiny", tok, send_token_ids=send_token_ids, concurrency=2,
                          logprobs=True)  # fmt: skip
    params = SamplingParams(
        n=3, temperature=1.0, max_tokens=12, seed=11, stop_token_ids=[tok.eos_token_id]
    )
    prompts = ids(tok, "What is 2+2?", "Hi")
    remote = client.generate(prompts, params)
    assert len(remote) == 6 and [c.prompt_index for c in remote] == [0, 0, 0, 1, 1, 1]
    for i, p in enumerate(prompts):  # the client seeds prompt i with seed + i
        want = eng.generate([p], SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=11 + i,
                                                stop_token_ids=[tok.eos_token_id]))  # fmt: skip
        for r, w in zip(remote[3 * i : 3 * i + 3], want):
            assert (r.token_ids, r.text, r.finish_reason) == (w.token_ids, w.text, w.finish_reason)
            assert r.logprobs == pytest.approx(w.logprobs, abs=1e-6) and r.meta["logprobs"]


def test_chat_round_trip_through_openai_engine(setup):
    server, _, _, eng, tok, _ = setup
    client = OpenAIEngine(server.url, "tiny", tok, api="chat", system="sys")
    [r] = client.generate(ids(tok, "hello"), SamplingParams(max_tokens=8, temperature=0))
    [w] = local(eng, tok, "<system>sys|<user>hello|<assistant>", max_tokens=8, temperature=0)
    assert r.text == w.text and r.token_ids == w.token_ids


def test_concurrent_requests_share_a_generate_call(setup):
    server, _, engine, _, tok, _ = setup
    engine.calls.clear()
    client = OpenAIEngine(server.url, "tiny", tok, concurrency=4)
    comps = client.generate(ids(tok, "a", "b", "c", "d"), SamplingParams(max_tokens=4))
    assert [c.prompt_index for c in comps] == [0, 1, 2, 3]
    assert sum(engine.calls) == 4 and len(engine.calls) < 4  # batched within the 200 ms window


def test_api_key_and_chat_without_template():
    tok = char_tokenizer()
    with AhaServer(HFEngine(tiny_model(len(tok)), tok), tok, "t", api_key="s3cret") as server:
        c = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
        with pytest.raises(urllib.error.HTTPError) as e:  # no key at all
            urllib.request.urlopen(server.url + "/models", timeout=30)
        assert e.value.code == 401 and json.loads(e.value.read())["error"]["code"] == 401
        with urllib.request.urlopen(server.url[:-3] + "/health", timeout=30) as r:
            assert r.status == 200  # health checks need no key
        c = openai.OpenAI(base_url=server.url, api_key="s3cret", max_retries=0)
        assert c.models.list().data[0].id == "t"
        with pytest.raises(openai.BadRequestError, match="no chat template"):
            c.chat.completions.create(model="t", messages=[{"role": "user", "content": "x"}])


# ---- the `aha serve` process ------------------------------------------------------------------------------------
def start(args, log, env=None):
    proc = subprocess.Popen([sys.executable, "-m", "aha", "serve", *args], stdout=subprocess.PIPE,
                            stderr=log, text=True, env=env)  # fmt: skip
    line = proc.stdout.readline()
    return proc, line


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_process_streams_stops_on_sigterm_and_never_prints_a_traceback(tmp_path):
    log = open(tmp_path / "stderr.txt", "w+")
    proc, line = start(
        ["tiny-random", "--port", "0", "--served-model-name", "tr", "device=cpu"], log
    )
    try:
        assert "serving tiny-random as 'tr' at http://127.0.0.1:" in line, (
            line,
            open(log.name).read(),
        )
        url = line.split(" at ")[1].split()[0]
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        chunks = list(
            client.completions.create(model="tr", prompt="hi", max_tokens=5, seed=1, stream=True)
        )
        full = client.completions.create(model="tr", prompt="hi", max_tokens=5, seed=1)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        for body in (
            {"prompt": "hi", "max_tokens": 200, "stream": True},
            {"prompt": "hi", "max_tokens": 200},
        ):
            with socket.create_connection(("127.0.0.1", port)) as s:  # disconnect mid-request
                data = json.dumps(body).encode()
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(data), data))  # fmt: skip
                time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    err = open(log.name).read()
    assert "Traceback" not in err and "Exception" not in err, err


def test_one_line_errors_exit_2(monkeypatch, capsys):
    from aha.cli import main

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
        assert main(["serve", "tiny-random"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'aha-rl[serve]'" in err and err.count("\n") == 1
    assert main(["serve"]) == 2 and "usage: aha serve MODEL" in capsys.readouterr().err
    assert main(["serve", "tiny-random", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err
    with socket.socket() as busy:  # a port in use: one line naming it, before the model loads
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "tiny-random", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "--port" in err and err.count("\n") == 1
    with (
        monkeypatch.context() as m
    ):  # a missing model file: before fastapi (and torch) are imported
        m.setitem(sys.modules, "fastapi", None)
        assert main(["serve", "./no-such-model.gguf"]) == 2
    err = capsys.readouterr().err
    assert "'./no-such-model.gguf' does not exist" in err and err.count("\n") == 1


def test_default_name_is_the_directory_name(tmp_path):
    from aha.serve import default_name

    d = tmp_path / "checkpoints" / "step-000060"
    d.mkdir(parents=True)
    assert (
        default_name(str(d)) == "step-000060"
        and default_name("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    )
    gguf = (
        tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )  # a file: its name, not its whole path
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert default_name(str(gguf)) == "SmolLM2-135M-Instruct.Q4_1.gguf"
