"""OpenAIEngine against stand-in servers over real HTTP on 127.0.0.1 (tests/openai_fake.py): request bodies,
vLLM's token ids, DeepSeek's reasoner (no logprobs, n ignored, reasoning_content), servers that ignore or cap n,
and the resumable request cache (old cache files included). Retries and transport: test_openai_retries.py."""

import hashlib
import json
import math
from dataclasses import dataclass

import pytest

from aha.models.tiny import char_tokenizer
from aha.rollout import SamplingParams
from aha.rollout.openai_client import OpenAIEngine, OpenAIError
from aha.rollout.openai_client.response import to_completion
from openai_fake import Fake, deepseek, error, plain, text_of, vllm

TOK = char_tokenizer()
EOS = TOK.eos_token_id


@dataclass(frozen=True)
class StopParams(SamplingParams):
    """SamplingParams with stop strings (read with getattr, so this works before and after they land there)."""

    stop: tuple = ()
    include_stop_str_in_output: bool = False


class Rig:
    """Makes fake servers and engines, and closes them all at the end of the test."""

    def __init__(self):
        self.made = []

    def server(self, script, delay=0.0):
        self.made.append(Fake(script, delay))
        return self.made[-1]

    def engine(self, fake, **kw):
        self.made.append(OpenAIEngine(fake.url, "teacher", TOK, **kw))
        return self.made[-1]

    def both(self, script, delay=0.0, **kw):
        f = self.server(script, delay)
        return f, self.engine(f, **kw)


@pytest.fixture
def rig():
    r = Rig()
    yield r
    for x in r.made:
        x.close()


def prompts(*texts):
    return [TOK(t, add_special_tokens=False).input_ids for t in texts]


def test_request_bodies(rig):
    f, eng = rig.both(plain, concurrency=2)
    params = StopParams(n=2, temperature=0.7, max_tokens=9, seed=5, stop_token_ids=[EOS])
    comps = eng.generate(prompts("ab", "cd"), params)
    assert [c.text for c in comps] == ["ab/0/5", "ab/1/5", "cd/0/6", "cd/1/6"]  # seed + i
    assert [c.prompt_index for c in comps] == [0, 0, 1, 1]
    assert sorted(f.bodies, key=lambda b: b["prompt"])[0] == {
        "model": "teacher",
        "max_tokens": 9,
        "temperature": 0.7,
        "top_p": 1.0,
        "n": 2,
        "seed": 5,
        "stop_token_ids": [EOS],
        "return_token_ids": True,  # vLLM extensions on by default; no logprobs unless asked
        "prompt": "ab",
    }
    params = StopParams(top_k=5, stop=("\n\n", "</answer>"), include_stop_str_in_output=True)
    eng.generate(prompts("ab"), params)
    assert f.bodies[-1]["stop"] == ["\n\n", "</answer>"] and f.bodies[-1]["top_k"] == 5
    assert f.bodies[-1]["include_stop_str_in_output"] is True and "seed" not in f.bodies[-1]

    # a plain OpenAI server: no vLLM fields; prompt ids sent as ids; logprobs asked; extra_body passed through
    bare = rig.engine(
        f,
        send_token_ids=True,
        vllm_extensions=False,
        logprobs=True,
        extra_body={"repetition_penalty": 1.1, "min_p": 0.05},
    )
    bare.generate(prompts("ab"), StopParams(max_tokens=3, stop_token_ids=[EOS], stop=("x",)))
    body = f.bodies[-1]
    assert body["prompt"] == prompts("ab")[0] and body["logprobs"] == 1 and body["stop"] == ["x"]
    assert body["repetition_penalty"] == 1.1 and body["min_p"] == 0.05
    assert not {"stop_token_ids", "return_token_ids", "top_k"} & set(body)
    with pytest.raises(ValueError, match="top_k"):
        bare.generate(prompts("ab"), SamplingParams(top_k=5))
    with pytest.raises(ValueError, match="extra_body may not set n, seed"):
        OpenAIEngine(f.url, "m", TOK, extra_body={"seed": 1, "n": 2, "top_k": 3})


def test_vllm_token_ids_and_logprobs_are_used(rig):
    f, eng = rig.both(vllm(TOK), logprobs=True)
    [c] = eng.generate(prompts("ab"), SamplingParams(max_tokens=9, seed=0))
    assert c.text == "ab/0/0" and c.meta["token_ids"] == "server"
    assert c.token_ids == prompts("#" * 6)[0] + [EOS]  # the server's ids, not the text re-encoded
    assert c.logprobs == pytest.approx([-0.5 - 0.01 * t for t in range(7)]) and c.meta["logprobs"]
    assert c.meta["prompt_token_ids"] == [7, 8, 9]

    # vllm_extensions off: no return_token_ids, so vLLM sends no ids and the text is re-encoded (+ EOS)
    plain_eng = rig.engine(f, vllm_extensions=False)
    [c] = plain_eng.generate(prompts("ab"), SamplingParams(max_tokens=9, seed=0))
    assert c.meta["token_ids"] == "text" and c.token_ids == prompts("ab/0/0")[0] + [EOS]
    assert not c.meta["logprobs"] and all(math.isnan(x) for x in c.logprobs)


def test_vllm_chat_keeps_reasoning_and_ids(rig):
    _, eng = rig.both(vllm(TOK), api="chat", system="be brief")
    [c] = eng.generate(prompts("2+2?"), SamplingParams(max_tokens=5))
    assert c.text == "<think>\nhmm\n</think>\n2+2?/0/None"
    assert c.meta["token_ids"] == "server" and c.meta["prompt_token_ids"] == [7, 8, 9]


def test_deepseek_reasoner_no_logprobs_n_ignored(rig):
    f, eng = rig.both(deepseek, api="chat", vllm_extensions=False, concurrency=4)
    comps = eng.generate(prompts("p", "q"), SamplingParams(n=3, seed=10, max_tokens=50))
    assert f.bodies[0]["messages"] == [
        {"role": "user", "content": f.bodies[0]["messages"][0]["content"]}
    ]
    assert "logprobs" not in f.bodies[0] and eng.ignores_n
    # one request per sample: 2 asking n=3 (one choice back each), then 2 x 2 fill-ins asking n=1
    assert len(f.bodies) == 6 and eng.stats["fill_ins"] == 4
    assert sorted(b["seed"] for b in f.bodies) == [10, 11, 12, 13, 14, 15]  # seed + i + j * P
    assert [c.text for c in comps] == [
        f"<think>\nLet me think.\nDone.\n</think>\n<answer>{p}/0/{s}</answer>"
        for p, s in [("p", 10), ("p", 12), ("p", 14), ("q", 11), ("q", 13), ("q", 15)]
    ]
    assert all(c.meta["token_ids"] == "text" and c.token_ids[-1] == EOS for c in comps)
    # asking for logprobs: the server's one-line refusal
    strict = rig.engine(f, api="chat", vllm_extensions=False, logprobs=True)
    with pytest.raises(
        OpenAIError, match="HTTP 400: deepseek-reasoner does not support.*logprobs=false"
    ):
        strict.generate(prompts("p"), SamplingParams())


def test_refused_vllm_field_names_the_fix(rig):
    def openai_api(body, k):  # OpenAI's own API refuses fields it does not know
        extra = sorted(set(body) - {"model", "prompt", "max_tokens", "temperature", "top_p", "n"})
        if extra:
            return error(400, f"Unrecognized request argument supplied: {extra[0]}")
        return plain(body)

    f, eng = rig.both(openai_api)
    with pytest.raises(OpenAIError, match="return_token_ids is a vLLM field: set vllm_extensions"):
        eng.generate(prompts("p"), SamplingParams())
    [c] = rig.engine(f, vllm_extensions=False).generate(prompts("p"), SamplingParams())
    assert c.text == "p/0/None"


def test_max_tokens_past_the_context_names_the_fix(rig):
    def small_context(
        body, k
    ):  # aha serve's / vLLM's refusal of max_tokens past the model's context
        if body["max_tokens"] > 8:
            return error(400, f"'max_tokens' is too large: {body['max_tokens']}. This model's maximum "
                              "context length is 16 tokens")  # fmt: skip
        return plain(body)

    f, eng = rig.both(small_context)
    with pytest.raises(
        OpenAIError, match=r"too large: 32\..* \(ask for fewer new tokens: sampling"
    ):
        eng.generate(prompts("p"), SamplingParams(max_tokens=32))
    [c] = eng.generate(prompts("p"), SamplingParams(max_tokens=8))
    assert c.text == "p/0/None"


def test_known_n_ignorer_gets_all_requests_at_once(rig):
    f, eng = rig.both(lambda b, k: plain(b, n_choices=1), delay=0.2, concurrency=4)
    params = SamplingParams(n=4, seed=0)
    eng.generate(prompts("a"), params)
    assert f.max_in_flight == 3 and eng.ignores_n  # one request, then its 3 fill-ins; learnt
    f.max_in_flight = 0
    comps = eng.generate(prompts("b"), params)
    assert f.max_in_flight == 4 and [c.text for c in comps] == [f"b/0/{s}" for s in range(4)]


def test_server_that_caps_n(rig):
    f, eng = rig.both(lambda b, k: plain(b, n_choices=min(b["n"], 2)))
    comps = eng.generate(prompts("a"), SamplingParams(n=5, seed=1))
    assert [c.text for c in comps] == ["a/0/1", "a/1/1", "a/0/3", "a/0/4", "a/0/5"]
    assert len(f.bodies) == 4 and not eng.ignores_n


def test_to_completion_stop_token_when_reencoding():
    def ids(rec, params=None):
        params = params or SamplingParams()
        return to_completion(0, {"text": "ab", **rec}, params, TOK, "u").token_ids

    ab = prompts("ab")[0]
    assert ids({"finish_reason": "length"}) == ab
    assert ids({"finish_reason": "stop"}) == ab + [EOS]  # plain OpenAI: stopped = EOS
    assert ids({"finish_reason": "stop", "stop_reason": None}) == ab + [EOS]  # vLLM: EOS
    assert ids({"finish_reason": "stop", "stop_reason": 5}) == ab + [5]  # vLLM: a stop token id
    assert ids({"finish_reason": "stop", "stop_reason": "\n\n"}) == ab  # vLLM: a stop string
    assert ids({"finish_reason": "stop"}, StopParams(stop=("x",))) == ab  # unknown: no token
    no_eos = SamplingParams(stop_token_ids=[3])  # EOS is not a stop token here
    assert ids({"finish_reason": "stop"}, no_eos) == ab


def test_cache_resumes_without_regenerating(rig, tmp_path):
    cache = tmp_path / "requests.jsonl"
    fail = {"on": True}

    def script(body, k):  # caps n at 1; the fill-ins of "c" fail until fail["on"] is cleared
        if fail["on"] and text_of(body, 0).startswith("c") and body["n"] == 1:
            return 400, {"error": {"message": "crash"}}, {}
        return plain(body, n_choices=1)

    f, eng = rig.both(script, cache_path=cache, concurrency=1)
    params = SamplingParams(n=2, seed=1)
    with pytest.raises(OpenAIError, match="crash"):
        eng.generate(prompts("a", "b", "c", "d"), params)
    answered = len(f.bodies) - 1  # all but the failed one were cached as they landed
    assert len(cache.read_text().splitlines()) == answered
    with cache.open("a") as fh:
        fh.write('{"key": "torn')  # a crash while writing a line
    fail["on"] = False
    before = len(f.bodies)
    eng2 = rig.engine(f, cache_path=cache)
    comps = eng2.generate(prompts("a", "b", "c", "d"), params)
    assert [c.text for c in comps] == [
        f"{p}/0/{1 + i + 4 * j}" for i, p in enumerate("abcd") for j in range(2)
    ]
    assert len(f.bodies) - before == 8 - answered and eng2.stats["cache_hits"] == answered
    eng2.generate(prompts("a"), SamplingParams(n=1))  # same request again later: fresh, not cached
    eng2.generate(prompts("a"), SamplingParams(n=1))
    assert len(f.bodies) - before == 8 - answered + 2


def test_cache_files_of_the_old_client_still_hit(rig, tmp_path):
    """The client before return_token_ids always sent logprobs; its files resume without a request."""
    f = rig.server(plain)
    url = f.url + "/completions"
    old = {"model": "teacher", "max_tokens": 4, "temperature": 1.0, "top_p": 1.0, "n": 1, "seed": 3}
    old.update({"stop_token_ids": [EOS], "prompt": "hi", "logprobs": 1})
    key = hashlib.sha256(json.dumps([url, old], sort_keys=True).encode()).hexdigest() + ":1"
    choice = {"text": "cached", "finish_reason": "stop", "token_ids": None, "logprobs": None}
    cache = tmp_path / "old.jsonl"
    cache.write_text(json.dumps({"key": key, "choices": [choice]}) + "\n")
    eng = rig.engine(f, cache_path=cache)
    [c] = eng.generate(prompts("hi"), SamplingParams(max_tokens=4, seed=3, stop_token_ids=[EOS]))
    assert c.text == "cached" and f.count == 0 and eng.stats["cache_hits"] == 1


def test_sample_config_keys_reach_the_engine(tmp_path):
    from aha.config import ConfigError, load_config
    from aha.sample import SampleConfig
    from aha.sample.engine import build_engine

    base = ["engine=openai", "openai.model=r1", "model.path=tiny-random", f"out={tmp_path}"]
    cfg = load_config(
        SampleConfig, None, base + ["openai.logprobs=true", "openai.extra_body.min_p=0.05"]
    )
    eng, _, name = build_engine(cfg)
    eng.close()
    assert eng.logprobs and eng.extra_body == {"min_p": 0.05} and name.startswith("r1@")
    assert eng.cache.path == tmp_path / "requests.jsonl"
    with pytest.raises(ConfigError, match="'openai.extra_body': may not set n, seed"):
        load_config(
            SampleConfig, None, base + ["openai.extra_body.seed=1", "openai.extra_body.n=2"]
        )
