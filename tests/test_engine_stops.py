"""Stop strings, streaming (on_tokens) and abort, in HFEngine and FastEngine alike (CPU, tiny models).

The reference for a stop string is the definition itself: the first j such that decode(tokens[:j]) contains a
stop string, checked on random token sequences (with multi-byte characters split across tokens) fed in random
chunks, and on real engine outputs.
"""

import random

import pytest
import torch

from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import HFEngine, SamplingParams
from aha.rollout.fast import FastEngine
from aha.rollout.fast.kv_cache import KVCache
from aha.rollout.stops import Tracker, first_match

TOK = char_tokenizer()
PROMPTS = ["hello world", "abc", "the quick brown fox", "x"]


class ByteTok:
    """A byte-level toy tokenizer: multi-character tokens, and tokens holding half of a UTF-8 character (so
    incremental decoding must hold back U+FFFD); id 0 is a special token."""

    pieces = [
        b"<s>",
        b"a",
        b"b",
        b"ab",
        b"User",
        b":",
        b" ",
        b"</ans",
        b"wer>",
        b"\xc3",
        b"\xa9",
        b"x",
    ]

    def decode(self, ids, skip_special_tokens=True):
        parts = [self.pieces[i] for i in ids if not (skip_special_tokens and i == 0)]
        return b"".join(parts).decode("utf-8", errors="replace")


def reference_cut(tok, ids, stops):
    """(kept count, text) by the definition: the first prefix whose decoded text holds a stop string."""
    for j in range(1, len(ids) + 1):
        text = tok.decode(ids[:j], skip_special_tokens=True)
        hit = first_match(text, stops)
        if hit is not None:
            return j, text[: hit[0]], hit[1]
    return len(ids), tok.decode(ids, skip_special_tokens=True), None


@pytest.mark.parametrize("seed", range(6))
def test_tracker_cuts_where_the_definition_does(seed):
    rng = random.Random(seed)
    tok = ByteTok()
    stops = ("User:", "</answer>", "é", "bab")
    for _ in range(60):
        ids = [rng.randrange(len(tok.pieces)) for _ in range(rng.randrange(1, 30))]
        params = SamplingParams(max_tokens=100, stop=stops)
        t = Tracker(0, params, tok)
        at = 0
        while at < len(ids) and not t.done:  # random chunks, as sync rounds deliver them
            k = rng.randrange(1, 6)
            t.push(ids[at : at + k])
            at += k
        n, text, stop = reference_cut(tok, ids, stops)
        c = t.completion(0)
        assert c.token_ids == ids[:n]
        assert (c.text, c.meta.get("stop"), c.finish_reason) == (
            text,
            stop,
            "stop" if stop else "length",
        )


def test_tracker_rules():
    tok = ByteTok()
    # the earliest match in the text wins, not the first string listed; include_stop_str_in_output keeps it
    p = SamplingParams(stop=("ab:", "b"), include_stop_str_in_output=True)
    t = Tracker(0, p, tok)
    t.push(
        [1, 3, 5, 11]
    )  # "a" "ab" ":" -> "aab:" has "ab:" at 1 and "b" at 2, both complete by token 2
    c = t.completion(0)
    assert (c.token_ids, c.text, c.meta["stop"]) == ([1, 3], "aab", "b")
    # a stop id before the string completes ends it; tokens after it are ignored; if both end at the same
    # token, the string is reported
    t = Tracker(0, SamplingParams(stop=("User:",), stop_token_ids=[4]), tok)
    t.push([1, 4, 5, 4])
    assert (t.completion(0).token_ids, t.completion(0).meta, t.reason) == ([1, 4], {}, "stop")
    t = Tracker(0, SamplingParams(stop=("User:",), stop_token_ids=[5]), tok)
    t.push([4, 5, 4, 5])
    assert (t.completion(0).token_ids, t.completion(0).meta) == ([4, 5], {"stop": "User:"})
    # max_tokens; on_tokens gets the kept tokens; returning False aborts
    got = []
    t = Tracker(3, SamplingParams(max_tokens=3), tok, lambda i, ids: got.append((i, ids)))
    t.push([1, 2])
    t.push([1, 2])
    assert got == [(3, [1, 2]), (3, [1])] and t.reason == "length"
    t = Tracker(0, SamplingParams(max_tokens=9), tok, lambda i, ids: False)
    t.push([1, 2])
    assert t.reason == "abort" and t.completion(0).token_ids == [1, 2]


def test_sampling_params_stop_forms():
    assert SamplingParams(stop="User:").stop == ("User:",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    hash(SamplingParams(stop=["a"]))
    with pytest.raises(ValueError, match="stop"):
        SamplingParams(stop=["a", ""])
    model = tiny()
    for eng in (HFEngine(model), FastEngine(model)):
        with pytest.raises(ValueError, match="tokenizer"):
            eng.generate(ids(["ab"]), SamplingParams(max_tokens=4, stop=["a"]))


def tiny(**kw):
    m = tiny_model(**{"family": "qwen2", **kw})
    m.generation_config.eos_token_id = None  # no stop ids means none (see test_fast_engine.tiny)
    return m


def ids(texts):
    return [TOK.encode(t) for t in texts]


def engines(model, **fast_kw):
    return HFEngine(model, TOK), FastEngine(model, TOK, **fast_kw)


def test_greedy_stop_strings_cut_the_same_in_both_engines():
    model = tiny(hidden_size=56, num_heads=7, num_kv_heads=1)
    prompts = ids(PROMPTS)
    hf, fast = engines(model, sync_every=3)
    free = hf.generate(prompts, SamplingParams(temperature=0, max_tokens=40))
    # strings from the model's own greedy text: one per prompt, plus one that never occurs
    stops = tuple(c.text[8 + 3 * i : 11 + 3 * i] for i, c in enumerate(free)) + ("~~~",)
    for include in (False, True):
        sp = SamplingParams(
            n=2, temperature=0, max_tokens=40, stop=stops, include_stop_str_in_output=include
        )
        a, b = hf.generate(prompts, sp), fast.generate(prompts, sp)
        assert sum(c.finish_reason == "stop" for c in a) >= 4
        for x, y, f in zip(a, b, [c for c in free for _ in range(2)]):
            n, text, stop = reference_cut(TOK, f.token_ids, stops)
            if include and stop:
                text += stop
            for c in (x, y):
                assert c.token_ids == f.token_ids[:n]
                assert (c.text, c.meta.get("stop")) == (text, stop)
                assert c.finish_reason == ("stop" if stop else "length")
                assert len(c.logprobs) == len(c.token_ids)
            assert max(abs(u - v) for u, v in zip(x.logprobs, y.logprobs)) <= 1e-4


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_sampled_stop_is_a_prefix_of_the_free_run_and_streams_it(engine):
    """Seeded sampling: a completion cut by a stop string is the free run's prefix up to the definition's cut
    (both engines draw the same noise whatever the stops); on_tokens delivers exactly the kept tokens."""
    model = tiny(family="qwen3")
    hf, fast = engines(model, sync_every=2, max_num_seqs=3)
    eng = hf if engine == "hf" else fast
    prompts = ids(PROMPTS)
    base = dict(n=3, temperature=1.0, max_tokens=30, seed=11)
    free = eng.generate(prompts, SamplingParams(**base))
    stops = (free[0].text[6:8], free[4].text[12:14], "zz")  # two that occur, one that may not
    got: dict[int, list[int]] = {}
    calls = []

    def on_tokens(i, new):
        calls.append(i)
        got.setdefault(i, []).extend(new)

    out = eng.generate(prompts, SamplingParams(**base, stop=stops), on_tokens=on_tokens)
    assert sum(c.finish_reason == "stop" for c in out) >= 2
    for i, (f, c) in enumerate(zip(free, out)):
        n, text, stop = reference_cut(TOK, f.token_ids, stops)
        assert (c.token_ids, c.text) == (f.token_ids[:n], text)
        # exact on the CPU; on a GPU the batch shrinks differently once rows stop, and other GEMM shapes
        # round differently (seen on the H200: same tokens, logprobs apart in the last bits)
        assert max((abs(u - v) for u, v in zip(c.logprobs, f.logprobs[:n])), default=0) <= 1e-4
        assert got.get(i, []) == c.token_ids
    if engine == "fast":
        assert len(calls) > len(out)  # streamed over several rounds, not once at the end


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_stop_ids_and_strings_together_stream_everything(engine):
    model = tiny(family="llama", tie_word_embeddings=False)
    hf, fast = engines(model, sync_every=4, max_num_seqs=2)
    eng = hf if engine == "hf" else fast
    prompts = ids(PROMPTS)
    free = hf.generate(prompts, SamplingParams(temperature=0, max_tokens=24))
    sp = SamplingParams(
        temperature=0,
        max_tokens=24,
        stop_token_ids=[free[0].token_ids[4]],
        stop=[free[2].text[10:12]],
    )
    got: dict[int, list[int]] = {}
    out = eng.generate(prompts, sp, on_tokens=lambda i, new: got.setdefault(i, []).extend(new))
    ref = hf.generate(prompts, sp)
    assert [c.token_ids for c in out] == [c.token_ids for c in ref]
    assert {c.finish_reason for c in out} >= {"stop"}
    for i, c in enumerate(out):
        assert got[i] == c.token_ids


def test_fast_abort_frees_its_row_and_pages_and_leaves_the_others_unchanged():
    model = tiny(hidden_size=56, num_heads=7, num_kv_heads=1)
    prompts = ids(PROMPTS)
    # one row, and KV cache for one sequence: the others can only run once the aborted one is freed
    bpp = KVCache.bytes_per_page(2, 4, 1, 8, torch.float32)
    eng = FastEngine(model, TOK, max_num_seqs=1, page_size=4, kv_cache_bytes=bpp * 13, sync_every=2)
    sp = SamplingParams(n=2, temperature=1.0, max_tokens=30, seed=5)
    free = eng.generate(prompts, sp)
    free_steps = eng.stats["decode_steps"]
    seen: dict[int, list[int]] = {}

    def on_tokens(i, new):
        seen.setdefault(i, []).extend(new)
        return not (i in (0, 5) and len(seen[i]) >= 3)  # abort completions 0 and 5 early

    out = eng.generate(prompts, sp, on_tokens=on_tokens)
    for i, (f, c) in enumerate(zip(free, out)):
        if i in (0, 5):
            assert c.finish_reason == "abort" and c.token_ids == seen[i]
            assert 3 <= len(c.token_ids) < 30 and c.token_ids == f.token_ids[: len(c.token_ids)]
        else:
            assert (c.token_ids, c.logprobs, c.finish_reason) == (f.token_ids, f.logprobs, "length")
    assert eng.stats["decode_steps"] <= free_steps - 2 * 20  # the aborted rows stopped decoding


def test_hf_abort():
    model = tiny()
    sp = SamplingParams(n=2, temperature=1.0, max_tokens=20, seed=1)
    free = HFEngine(model, TOK).generate(ids(PROMPTS[:2]), sp)
    out = HFEngine(model, TOK).generate(
        ids(PROMPTS[:2]), sp, on_tokens=lambda i, new: i != 1 or len(new) == 0
    )
    assert out[1].finish_reason == "abort" and out[1].token_ids == free[1].token_ids[:1]
    assert [c.token_ids for c in out[::2]] == [c.token_ids for c in free[::2]]
