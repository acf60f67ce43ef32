"""FastEngine's KV pages: allocated as tokens are written, preemption by recompute when the cache is full.

The reference is the same engine with a cache large enough for every sequence at once (no preemption): with
a tiny cache the samples must be the same (greedy and seeded sampling, stop ids and strings, n > 1 sharing
prompt pages), because a preempted sequence is re-prefilled with its own tokens and its sampling noise is keyed
by (seed, completion, token index), not by batch row or step.
"""

import pytest
import torch

from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import SamplingParams
from aha.rollout.factory import make_engine
from aha.rollout.fast import FastEngine, kv_bytes_per_token
from aha.rollout.fast.kv_cache import KVCache, PageAllocator
from aha.rollout.fast.scheduler import Scheduler

TOK = char_tokenizer()
PROMPTS = ["hello world", "abc", "the quick brown fox jumps", "x", "0123456789" * 2]
S = 4  # page size in these tests


@pytest.fixture(scope="module")
def model():
    m = tiny_model(family="qwen2", hidden_size=56, num_heads=7, num_kv_heads=1)
    m.generation_config.eos_token_id = None
    return m


def ids(texts):
    return [TOK.encode(t) for t in texts]


def engine(model, pages: int, **kw):
    bpp = KVCache.bytes_per_page(2, S, 1, 8, torch.float32)
    return FastEngine(model, TOK, page_size=S, kv_cache_bytes=bpp * (pages + 1), **kw)


def same(a, b):
    for x, y in zip(a, b, strict=True):
        assert (x.token_ids, x.finish_reason, x.text, x.meta) == (
            y.token_ids,
            y.finish_reason,
            y.text,
            y.meta,
        )
        assert max((abs(u - v) for u, v in zip(x.logprobs, y.logprobs)), default=0) <= 1e-4


@pytest.mark.parametrize(
    "sp",
    [
        SamplingParams(n=2, temperature=0, max_tokens=40),
        SamplingParams(n=3, temperature=1.0, max_tokens=40, seed=7),
        SamplingParams(n=2, temperature=0.8, top_p=0.9, top_k=30, max_tokens=40, seed=3),
    ],
    ids=["greedy", "sampled", "top-p-k"],
)
def test_tiny_cache_preempts_and_gives_the_samples_of_a_large_cache(model, sp):
    prompts = ids(PROMPTS)
    big = engine(model, 400, sync_every=4)
    ref = big.generate(prompts, sp)
    assert big.stats["preemptions"] == 0
    # the longest sequence needs cdiv(20 + 39, 4) = 15 pages: 24 pages hold one long sequence and a bit
    small = engine(model, 24, sync_every=4, max_num_seqs=6)
    got = small.generate(prompts, sp)
    assert small.stats["preemptions"] > 0 and small.stats["peak_pages"] <= 24
    same(got, ref)


def test_preemption_with_stop_ids_strings_and_streaming(model):
    prompts = ids(PROMPTS)
    free = engine(model, 400).generate(prompts, SamplingParams(n=2, max_tokens=48, seed=1))
    sp = SamplingParams(
        n=2,
        max_tokens=48,
        seed=1,
        stop_token_ids=[free[0].token_ids[30]],
        stop=[free[3].text[20:22]],
    )
    ref = engine(model, 400).generate(prompts, sp)
    streamed: dict[int, list[int]] = {}
    eng = engine(model, 22, sync_every=3)  # the longest sequence needs cdiv(25 + 47, 4) = 18 pages
    got = eng.generate(prompts, sp, on_tokens=lambda i, new: streamed.setdefault(i, []).extend(new))
    assert eng.stats["preemptions"] > 0
    assert {c.finish_reason for c in ref} == {"stop", "length"}
    same(got, ref)
    # tokens of a preempted sequence are delivered once: the stream is the final completion
    assert [streamed[i] for i in range(len(got))] == [c.token_ids for c in got]


def test_one_sequence_larger_than_half_the_cache_does_not_deadlock(model):
    prompts = ids(["abc", "def", "ghi"])
    sp = SamplingParams(temperature=0, max_tokens=60)  # cdiv(3 + 59, 4) = 16 pages each
    ref = engine(model, 400).generate(prompts, sp)
    eng = engine(model, 20, sync_every=5)  # 16 of 20 pages: only one can finish at a time
    got = eng.generate(prompts, sp)
    same(got, ref)
    assert eng.stats["preemptions"] >= 2 and eng.stats["peak_pages"] <= 20


def test_a_sequence_that_cannot_fit_the_whole_cache_is_a_one_line_error(model):
    eng = engine(model, 10)
    with pytest.raises(ValueError) as e:
        eng.generate(ids(["hello"]), SamplingParams(max_tokens=60))
    msg = str(e.value)
    assert "\n" not in msg and "KV cache" in msg and "max_tokens 60" in msg
    assert "kv_cache_bytes" in msg


def test_pages_follow_the_tokens_written(model):
    """Sequences that stop early never take the pages max_tokens would have reserved; admission fills rows
    as soon as pages free up, so 10 short completions run in a cache that could reserve only one."""
    prompts = ids(PROMPTS)
    free = engine(model, 400).generate(prompts, SamplingParams(temperature=0, max_tokens=8))
    sp = SamplingParams(
        n=2, temperature=0, max_tokens=200, stop_token_ids={c.token_ids[5] for c in free}
    )
    eng = engine(model, 70, sync_every=2)  # reservation: cdiv(20 + 199, 4) = 55 pages a sequence
    got = eng.generate(prompts, sp)
    assert all(c.finish_reason == "stop" and len(c.token_ids) <= 6 for c in got)
    # ~3 pages a sequence (prompt + a few tokens + the rounds before a stop is seen), not 55
    assert eng.stats["preemptions"] == 0 and eng.stats["peak_pages"] <= 40
    assert eng.stats["decode_steps"] <= 12  # all ten ran side by side, not one after another


def test_scheduler_grows_preempts_the_latest_and_resumes_in_order():
    """Page arithmetic by hand: page size 4, prompts of 8 tokens, max_tokens 12, rounds of 4 steps."""
    sched = Scheduler([[1] * 8, [2] * 8], 2, 12, 4, 4, PageAllocator(12))  # 11 usable pages, 4 rows
    units = sched.admit(4)
    # each sample: 2 shared prompt pages + 1 private page for its first 4 steps (cdiv(8 + 5 - 1, 4) = 3)
    assert [(u.prompt_index, [s.index for s in u.seqs]) for u in units] == [
        (0, [0, 1]),
        (1, [2, 3]),
    ]
    assert sched.alloc.num_free == 11 - 8
    for s in sched.live.values():
        s.gen = 5
    entries, pre = sched.grow(4, snapshot_no=7)  # each wants a 4th page, 3 free: the latest goes
    assert len(entries) == 3 and [s.index for s in pre.values()] == [3]
    assert sched.alloc.num_free == 1  # its private page (the prompt pages are still used by 2)
    for s in sched.live.values():
        s.gen = 9
    entries, pre = sched.grow(4, snapshot_no=8)  # a 5th page each, 1 free: 0 gets it, 2 goes for 1
    assert [s.index for s in pre.values()] == [2] and len(entries) == 2
    assert sorted(s.index for s in sched.live.values()) == [0, 1] and sched.preemptions == 2
    assert sched.alloc.num_free == 3  # 2's 4 pages (prompt 1's pages now unused) less 1's new page
    sched.ready(7, lambda s: 9)
    assert [s.index for s in sched.resume] == [3]  # 2's last tokens come with snapshot 8
    sched.ready(8, lambda s: None if s.index == 2 else 9)  # completion 2 ended in its last tokens
    assert [s.index for s in sched.resume] == [3] and not sched.waiting
    assert sched.admit(4) == []  # 3 free pages; resuming 3 needs cdiv(8 + 12 - 1, 4) = 5
    sched.finish(sched.live[0])
    (u,) = sched.admit(4)
    assert u.resume and u.seqs[0].index == 3 and u.seqs[0].gen == 9 and len(u.seqs[0].pages) == 5
    assert (
        sched.admit(4) == [] and not sched.pending
    )  # nothing new: all 4 completions were admitted


def test_kv_bytes_per_token(model):
    per = kv_bytes_per_token(model)
    assert per == 2 * 2 * 1 * 8 * 4  # K and V x 2 layers x 1 KV head x head dim 8 x fp32
    assert per == kv_bytes_per_token(model.config, torch.float32)
    assert kv_bytes_per_token(model.config, torch.bfloat16) == per // 2
    eng = engine(model, 30)
    eng.generate(ids(["ab"]), SamplingParams(max_tokens=4))
    assert eng.cache.nbytes == (eng.cache.num_pages * S) * per


def test_make_engine_passes_the_cache_budget_to_the_fast_engine(model):
    eng = make_engine("fast", model, TOK, kv_cache_bytes=12345, sync_every=3)
    assert isinstance(eng, FastEngine) and (eng.kv_cache_bytes, eng.sync_every) == (12345, 3)
