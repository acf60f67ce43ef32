"""`aha serve`'s parts against slow obviously-right references, on fresh random inputs: streamed text (incremental
decoding with stop-string hold-back) vs decoding everything at the end, the server's limit/stop cut vs a
brute-force search, top-k scoring vs a full forward, and request checks (every bad field a 400 naming it)."""

import math
import random

import pytest
import torch

from aha.models.load import BUILTIN, load_tokenizer
from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout.base import Completion
from aha.serve.protocol import ApiError, parse
from aha.serve.scoring import score
from aha.serve.text import TextStream, apply_limit

BYTE_TOK = load_tokenizer(str(BUILTIN["tiny-base"]))  # byte-level BPE: characters split over tokens
TEXTS = ["é 中文 🙂 and ü", "12+7=19 </answer> User: hi", "naïve café ÷ 3 = ½ → done", "ab" * 20]


def first_stop(text, stops):
    hits = [(text.find(s), s) for s in stops if s in text]
    return min(hits) if hits else None


@pytest.mark.parametrize("seed", range(6))
def test_streamed_text_is_a_prefix_then_equals_the_final_text(seed):
    rng = random.Random(seed)
    text = rng.choice(TEXTS) + " " + rng.choice(TEXTS)
    ids = BYTE_TOK(text, add_special_tokens=False).input_ids
    full = BYTE_TOK.decode(ids, skip_special_tokens=True)
    # stop strings: a piece of the text (so it hits), a near miss (a prefix that never completes), a miss
    a = rng.randrange(len(full) - 3)
    stops = [full[a : a + rng.randint(1, 3)], full[a : a + 2] + "\x00", "zzz"]
    rng.shuffle(stops)
    hit = first_stop(full, stops)
    final = full if hit is None else full[: hit[0]]  # what the engine returns (cut before the stop)
    stream, sent, at = TextStream(BYTE_TOK, stops), "", 0
    while at < len(ids):
        k = rng.randint(1, 3)
        delta = stream.push(ids[at : at + k])
        at += k
        sent += delta
        # never a character too many, never a stop string
        assert final.startswith(sent), (sent, final)
        assert "\ufffd" not in delta  # never half a character
        decoded = BYTE_TOK.decode(ids[:at], skip_special_tokens=True)
        if hit is None and not decoded.endswith("\ufffd"):  # all that is safe went out
            longest_held = max(
                (k for s in stops for k in range(1, len(s)) if decoded.endswith(s[:k])), default=0
            )
            assert len(sent) == len(decoded) - longest_held
    assert sent + stream.finish(final) == final


@pytest.mark.parametrize("seed", range(8))
def test_apply_limit_matches_a_brute_force_cut(seed):
    rng = random.Random(seed)
    tok = char_tokenizer()
    text = "".join(rng.choice("abc xy") for _ in range(30))
    ids = tok(text, add_special_tokens=False).input_ids
    eos = tok.eos_token_id
    if rng.random() < 0.5:
        ids.insert(rng.randrange(len(ids)), eos)
    stops = tuple(rng.sample(["ab", "cx", "y y", "xyz"], 2))
    include = rng.random() < 0.3
    limit = rng.randint(1, len(ids) + 3)
    comp = Completion(0, list(ids), [float(-i) for i in range(len(ids))],
                      tok.decode(ids, skip_special_tokens=True), "length")  # fmt: skip
    got = apply_limit(comp, limit, tok, (eos,), stops, include)
    # reference: generate token by token; stop at the first token after which a rule fires
    want_ids, reason, stop = [], "length", None
    for t in ids[:limit]:
        want_ids.append(t)
        if t == eos:
            reason, stop = "stop", eos
            break
        done = first_stop(tok.decode(want_ids, skip_special_tokens=True), stops)
        if done is not None:
            reason, stop = "stop", done[1]
            break
    want_text = tok.decode(want_ids, skip_special_tokens=True)
    if isinstance(stop, str):
        at = want_text.find(stop)
        want_text = want_text[: at + (len(stop) if include else 0)]
    assert (got.token_ids, got.text, got.finish_reason) == (want_ids, want_text, reason)
    assert got.logprobs == comp.logprobs[: len(want_ids)] and got.meta.get("stop") == (
        stop if isinstance(stop, str) else None
    )


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_score_matches_a_full_forward(temperature):
    torch.manual_seed(0)
    model = tiny_model(103, seed=3).eval()
    ids = torch.randint(0, 103, (20,)).tolist()
    lps, tops = score(model, ids, start=5, temperature=temperature, k=4, chunk=3)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()  # (L, V)
    logp = (logits / (temperature or 1.0)).log_softmax(-1)
    for j, t in enumerate(range(5, 20)):
        assert lps[j] == pytest.approx(logp[t - 1, ids[t]].item(), abs=1e-5)
        val, idx = logp[t - 1].topk(4)
        assert [a for a, _ in tops[j]] == idx.tolist()
        assert [v for _, v in tops[j]] == pytest.approx(val.tolist(), abs=1e-5)
    # position 0 has no logprob: scoring starts at 1
    first = score(model, ids, start=0, temperature=1.0, k=0)[0][0]
    assert first == pytest.approx(logits.log_softmax(-1)[0, ids[1]].item(), abs=1e-5)


BAD = [
    ({"prompt": "a", "temperature": math.nan}, "temperature"),
    ({"prompt": "a", "temperature": math.inf}, "temperature"),
    ({"prompt": "a", "temperature": True}, "temperature"),
    ({"prompt": "a", "temperature": 10**400}, "temperature"),
    ({"prompt": "a", "top_p": 0}, "top_p"),
    ({"prompt": "a", "stop": 123}, "stop"),
    ({"prompt": "a", "stop": [""]}, "stop"),
    ({"prompt": "a", "seed": 10**30}, "seed"),
    ({"prompt": "a", "seed": 1e30}, "seed"),
    ({"prompt": "a", "n": 0}, "n"),
    ({"prompt": "a", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "a", "logprobs": 21}, "logprobs"),
    ({"prompt": "a", "presence_penalty": 0.5}, "presence_penalty"),
    ({"prompt": "a", "logit_bias": {"5": 10}}, "logit_bias"),
    ({"prompt": "a", "min_p": 0.1}, "min_p"),
    ({"prompt": "a", "repetition_penalty": True}, "repetition_penalty"),
    ({"prompt": "a", "best_of": 3}, "best_of"),
    ({"prompt": "a", "frobnicate": 1}, "frobnicate"),
    ({"prompt": "a", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": [1, 2.5]}, "prompt"),
    ({"prompt": [[1], ["a"]]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [True]}, "prompt"),
]
BAD_CHAT = [
    ({"messages": []}, "messages"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages",
    ),
    ({"messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools"),
    (
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        },
        "response_format",
    ),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, "top_logprobs"),
    (
        {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 50},
        "top_logprobs",
    ),
    (
        {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0},
        "max_completion_tokens",
    ),
    # named as the client sent it
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
]


@pytest.mark.parametrize("body,param", BAD + [(b, p) for b, p in BAD_CHAT])
def test_bad_fields_are_400s_naming_the_field(body, param):
    with pytest.raises(ApiError) as e:
        parse(body, chat="messages" in body)
    assert (
        e.value.status == 400 and e.value.param == param and param.split(".")[0] in e.value.message
    )


def test_neutral_values_and_good_bodies_parse():
    r = parse({"prompt": [[1, 2], [3]], "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {},
               "stop": "x", "seed": 2**63 - 1, "user": "u", "best_of": 2, "n": 2, "max_tokens": 3.0,
               "top_k": -1, "stream": True, "stream_options": {"include_usage": True}}, chat=False)  # fmt: skip
    assert r.prompts == [[1, 2], [3]] and r.stop == ("x",) and r.max_tokens == 3 and r.top_k == 0
    assert r.include_usage and r.seed == 2**63 - 1
    c = parse({"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"},
               {"type": "text", "text": "b"}]}], "tools": [], "tool_choice": "none", "logprobs": True,
               "max_tokens": 5, "max_completion_tokens": 7}, chat=True)  # fmt: skip
    assert (
        c.messages == [{"role": "system", "content": "a\nb"}]
        and c.max_tokens == 7
        and c.logprobs == 0
    )
    assert (
        parse({"prompt": "a", "echo": True, "max_tokens": 0, "logprobs": 1}, chat=False).max_tokens
        == 0
    )


class Counting:
    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def generate(self, prompts, params, on_tokens=None):
        self.calls.append((len(prompts), params.max_tokens))
        return self.engine.generate(prompts, params, on_tokens=on_tokens)


def test_requests_with_different_limits_share_a_call_and_each_keeps_its_own():
    import asyncio

    from aha.rollout import HFEngine, SamplingParams
    from aha.serve.scheduler import Job, Scheduler

    tok = char_tokenizer()
    model = tiny_model(len(tok), seed=5).eval()
    engine = Counting(HFEngine(model, tok))
    sched = Scheduler(engine, tok, model, window_ms=500)
    asks = [("ab", [3, 3]), ("cd", [11, 11]), ("efg", [6, 6])]  # prompt, limit per completion (n=2)

    async def run():
        loop = asyncio.get_running_loop()
        jobs = [Job([tok(p).input_ids], SamplingParams(n=2, temperature=0, max_tokens=max(lim)), lim, loop=loop,
                    stream=True) for p, lim in asks]  # fmt: skip
        for j in jobs:
            sched.submit(j)
        out = []
        for j in jobs:
            streamed = {0: [], 1: []}
            while (ev := await j.events.get())[0] == "tokens":
                streamed[ev[1]] += ev[2]
            assert ev[0] == "done", ev
            out.append((ev[1], streamed))
        return out

    try:
        results = asyncio.run(run())
    finally:
        sched.close()
    assert engine.calls == [(3, 11)]  # one call, run to the largest limit
    for (p, lim), (outs, streamed) in zip(asks, results):
        [want] = HFEngine(model, tok).generate(
            [tok(p).input_ids], SamplingParams(temperature=0, max_tokens=lim[0])
        )
        for k, o in enumerate(outs):
            c = o.completion
            assert (c.token_ids, c.text, c.finish_reason) == (
                want.token_ids,
                want.text,
                want.finish_reason,
            )
            assert c.logprobs == pytest.approx(want.logprobs, abs=1e-4) and c.prompt_index == 0
            assert streamed[k] == c.token_ids  # no token past the request's own limit was streamed


def test_a_reply_cut_by_max_tokens_has_no_half_character():
    """A whole reply, like a stream, never ends in the U+FFFD of a character whose bytes were cut by max_tokens;
    a reply that stopped keeps its text as it is."""
    from aha.rollout.base import Completion
    from aha.serve.text import whole_text

    cut = Completion(0, [1, 2], [0.0, 0.0], "hi \U0001f30d\ufffd", "length")
    assert whole_text(cut) == "hi \U0001f30d"
    done = Completion(0, [1, 2], [0.0, 0.0], "a \ufffd", "stop")
    assert whole_text(done) == "a \ufffd"


def test_threads_flag_sets_the_config_and_is_checked():
    """`aha serve MODEL --threads 1` (a shared CPU; train and eval have model.threads)."""
    from aha.cli_args import flags_to_overrides, split_args
    from aha.config import ConfigError, load_config
    from aha.serve.cli import FLAGS, ServeConfig

    model, overrides = split_args(flags_to_overrides(["tiny-base", "--threads", "1"], FLAGS))
    assert load_config(ServeConfig, None, [f"model={model}", *overrides]).threads == 1
    with pytest.raises(ConfigError, match="threads"):
        load_config(ServeConfig, None, ["threads=0"])
