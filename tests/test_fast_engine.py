"""FastEngine against the obviously-right references: the HF forward and HFEngine (fp32, CPU, tiny models).

The torch fallbacks of every kernel run here; the Triton kernels are checked by test_fast_engine_triton.py
(on the GPU, or on the CPU through TRITON_INTERPRET=1).
"""

import warnings

import pytest
import torch

from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import HFEngine, SamplingParams
from aha.rollout.fast import FastEngine
from aha.rollout.fast.kv_cache import KVCache
from aha.rollout.fast.model_runner import ModelRunner
from aha.rollout.fast.sampler import sample_torch

torch.set_num_threads(1)

CONFIGS = {
    "qwen2": dict(family="qwen2"),
    "llama": dict(family="llama", tie_word_embeddings=False),
    "qwen3": dict(family="qwen3"),
    "gqa7": dict(
        family="qwen2", hidden_size=56, num_heads=7, num_kv_heads=1
    ),  # Qwen2.5-0.5B's ratio
}
TOK = char_tokenizer()
PROMPTS = ["hello world", "abc", "the quick brown fox jumps over the lazy dog", "x"]


def tiny(**kw):
    m = tiny_model(**kw)
    # HFEngine leaves eos unset when stop_token_ids is empty, and HF generate then falls back to the model's
    # generation_config eos (id 1) and pads after it; clear it so the reference honours "no stop ids".
    m.generation_config.eos_token_id = None
    return m


def ids(texts):
    return [TOK.encode(t) for t in texts]


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    m = tiny(**CONFIGS[request.param])
    m.train()  # as in training: the engine must switch to eval itself and restore the mode
    return m


def runner_logits(model, seq, prefix, pages, pack=False):
    """Prefill seq[:prefix], then feed seq[prefix:] one token at a time through the decode path."""
    r = ModelRunner(model)
    if pack:
        r.pack()
    S = 4
    r.ensure_rope(len(seq))
    cache = KVCache(r.num_layers, 64, S, r.num_kv_heads, r.head_dim, r.dtype, r.device)
    slot = [pages[p // S] * S + p % S for p in range(len(seq))]
    t = torch.tensor
    out = [
        r.prefill(
            t(seq[:prefix]),
            torch.arange(prefix),
            t(slot[:prefix]),
            [prefix],
            cache,
            all_logits=True,
        )
    ]
    table = t([pages], dtype=torch.int32)
    for p in range(prefix, len(seq)):
        out.append(
            r.decode(t([seq[p]]), t([p]), t([slot[p]]), t([p + 1], dtype=torch.int32), table, cache)
        )
    return torch.cat(out)


@pytest.mark.parametrize("pack", [False, True], ids=["modules", "packed"])
def test_logits_match_hf_forward(model, pack):
    seq = ids(["the quick brown fox jumps over the lazy dog!"])[0]
    pages = [5, 2, 9, 1, 7, 3, 11, 4, 8, 6, 10, 12]
    with torch.no_grad():
        ref = model(torch.tensor([seq])).logits[0]
        got = runner_logits(model, seq, prefix=9, pages=pages, pack=pack)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-4


def test_greedy_token_identical_to_hf(model):
    sp = SamplingParams(n=2, temperature=0, max_tokens=64)
    ref = HFEngine(model, TOK).generate(ids(PROMPTS), sp)
    got = FastEngine(model, TOK).generate(ids(PROMPTS), sp)
    assert model.training
    assert [c.prompt_index for c in got] == [0, 0, 1, 1, 2, 2, 3, 3]
    for a, b in zip(ref, got):
        assert b.token_ids == a.token_ids and len(b.token_ids) == 64
        assert b.text == a.text and b.finish_reason == a.finish_reason == "length"
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= 1e-4


def test_logprobs_equal_training_forward():
    model = tiny(**CONFIGS["gqa7"])
    sp = SamplingParams(n=3, temperature=0.7, top_p=0.9, top_k=20, max_tokens=24, seed=3)
    eng = FastEngine(model, TOK)
    got = eng.generate(ids(PROMPTS), sp)
    assert [c.token_ids for c in eng.generate(ids(PROMPTS), sp)] == [
        c.token_ids for c in got
    ]  # seeded
    assert [
        c.token_ids
        for c in eng.generate(ids(PROMPTS), SamplingParams(**{**sp.__dict__, "seed": 4}))
    ] != [c.token_ids for c in got]
    for c in got:
        seq = ids(PROMPTS)[c.prompt_index] + c.token_ids
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -len(c.token_ids) - 1 : -1] / 0.7
        ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-4)


def chi_square(counts, probs):
    exp = probs * counts.sum()
    return (((counts - exp) ** 2) / exp).sum().item()


def test_sampler_frequencies_match_softmax_after_top_p():
    # 8-token vocabulary, T = 0.8, top-p = 0.8: by hand the sorted probs are ~(.43, .26, .14, .08, ...), so the
    # nucleus is the top 3 (mass above the 4th = .83 >= .8) and the law is their renormalised softmax.
    logits = torch.tensor([[1.0, 0.6, 0.1, -0.3, -0.7, -1.2, -1.5, -2.0]])
    p = torch.softmax(logits[0] / 0.8, -1)
    keep = torch.zeros(8, dtype=torch.bool)
    keep[:3] = True
    assert p[:3].sum() >= 0.8 > p[:2].sum()
    want = torch.where(keep, p, torch.zeros(())) / p[keep].sum()
    gen = torch.Generator().manual_seed(0)
    tok, lp = sample_torch(logits.repeat(40000, 1), 0.8, top_p=0.8, generator=gen)
    counts = torch.bincount(tok, minlength=8).double()
    assert counts[~keep].sum() == 0
    # df = 2; P(chi2_2 > 18.4) = 1e-4, so a correct sampler fails this with probability ~1e-4 per seed.
    assert chi_square(counts[keep], want[keep].double()) < 18.4
    assert torch.allclose(lp, torch.log(p)[tok])  # logprob before truncation
    tok_k, _ = sample_torch(logits.repeat(20000, 1), 1.0, top_k=2, generator=gen)
    pk = torch.softmax(logits[0, :2], -1).double()
    assert torch.bincount(tok_k, minlength=8)[2:].sum() == 0
    assert (
        chi_square(torch.bincount(tok_k, minlength=8)[:2].double(), pk) < 15.1
    )  # df = 1, p = 1e-4


def test_keyed_sampler_law_along_tokens_and_sequences():
    """The engine's noise is a hash of (seed, completion, token index, vocab id): draws along one completion's
    tokens and across completions must each follow softmax(logits / T) (chi-square, df = 7)."""
    logits = torch.tensor([[1.0, 0.6, 0.1, -0.3, -0.7, -1.2, -1.5, -2.0]])
    p = torch.softmax(logits[0] / 0.8, -1).double()
    N = 20000
    seed = torch.tensor([987654321987])
    ar, zero = torch.arange(N), torch.zeros(N, dtype=torch.long)
    for seq, t in ((zero + 3, ar), (ar, zero + 5)):
        tok, _ = sample_torch(logits.repeat(N, 1), 0.8, keys=(seed, seq, t))
        assert chi_square(torch.bincount(tok, minlength=8).double(), p) < 7 + 6 * 14**0.5
    again, _ = sample_torch(logits.repeat(N, 1), 0.8, keys=(seed, ar, zero + 5))
    assert torch.equal(again, tok)  # a pure function of the keys


def test_engine_sample_frequencies_first_token():
    model = tiny(family="qwen2", tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # peaked next-token law: the nucleus is 6 tokens
        logits = model(torch.tensor(ids(["abc"]))).logits[0, -1]
    p = torch.softmax(logits / 0.9, -1).double()
    order = p.argsort(descending=True)
    above = p[order].cumsum(0) - p[order]
    nucleus = order[above < 0.7]
    assert 2 <= len(nucleus) <= 12
    sp = SamplingParams(n=3000, temperature=0.9, top_p=0.7, max_tokens=1, seed=1)
    got = FastEngine(model, TOK).generate(ids(["abc"]), sp)
    counts = torch.bincount(
        torch.tensor([c.token_ids[0] for c in got]), minlength=p.numel()
    ).double()
    outside = torch.ones_like(counts, dtype=torch.bool)
    outside[nucleus] = False
    assert counts[outside].sum() == 0
    df = (
        len(nucleus) - 1
    )  # bound mean + 6 sd of chi2_df: a correct sampler passes with probability > 0.999
    assert chi_square(counts[nucleus], p[nucleus] / p[nucleus].sum()) < df + 6 * (2 * df) ** 0.5


@pytest.mark.parametrize("pack", [False, True], ids=["modules", "packed"])
def test_in_place_weight_change_is_seen(pack):
    model = tiny(family="qwen3")
    eng = FastEngine(model, TOK, pack_weights=pack)
    sp = SamplingParams(temperature=0, max_tokens=16)
    before = eng.generate(ids(PROMPTS), sp)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    seq = torch.tensor(ids(["zzzz qqqq zzzz"]))
    model(seq, labels=seq).loss.backward()
    opt.step()  # an optimizer step updates the tensors in place
    after = eng.generate(ids(PROMPTS), sp)
    ref = HFEngine(model, TOK).generate(ids(PROMPTS), sp)
    assert [c.token_ids for c in after] == [c.token_ids for c in ref]
    assert [c.token_ids for c in after] != [c.token_ids for c in before]
    assert (eng.stats["packed_mib"] > 0) == pack


def test_packed_weights_are_fresh_copies_kept_in_one_place_until_release():
    """pack() copies the live weights' values (not views) into one buffer whose address does not change (the
    CUDA graphs read it) until release(); the default is to pack only on a GPU."""
    model = tiny(**CONFIGS["qwen2"])
    r = ModelRunner(model)
    a = model.model.layers[1].self_attn
    nbytes = r.pack()
    wqkv, bqkv, wgu, bgu = r._packed[1]
    assert (
        nbytes == r._buffer.nbytes == sum(t.nbytes for g in r._packed for t in g if t is not None)
    )
    torch.testing.assert_close(wqkv, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
    torch.testing.assert_close(bqkv, torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
    mlp = model.model.layers[1].mlp
    torch.testing.assert_close(wgu, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))
    assert bgu is None  # Qwen2's MLP has no biases
    with torch.no_grad():
        a.k_proj.bias.add_(1.0)
    k_bias = slice(a.q_proj.out_features, a.q_proj.out_features + a.k_proj.out_features)
    assert not torch.equal(r._packed[1][1][k_bias], a.k_proj.bias)  # a copy, not a view
    assert r.params_key()[-2:] == (r._buffer.data_ptr(), r._layout)
    ptr = r._buffer.data_ptr()
    r.pack()
    assert r._buffer.data_ptr() == ptr
    assert torch.equal(r._packed[1][1][k_bias], a.k_proj.bias)
    eng = FastEngine(model, TOK, pack_weights=True)
    sp = SamplingParams(temperature=0, max_tokens=4)
    eng.generate(ids(PROMPTS), sp)
    key = eng.runner.params_key()
    eng.generate(ids(PROMPTS), sp)
    assert eng.runner.params_key() == key and eng.stats["packed_mib"] == nbytes / 2**20
    eng.release()
    assert eng.runner._packed is None and eng.runner._buffer is None
    plain = FastEngine(model, TOK)
    plain.generate(ids(PROMPTS), sp)
    assert plain.stats["packed_mib"] == 0 and plain.runner._buffer is None
    with pytest.raises(ValueError, match="pack_weights must be True, False or None"):
        FastEngine(model, TOK, pack_weights="yes")


def test_default_packing_only_on_a_gpu_with_room():
    from aha.rollout.fast.engine import AUTO_PACK_SHARE, auto_pack

    assert auto_pack("cuda", 10, int(10 / AUTO_PACK_SHARE)) and not auto_pack("cuda", 10, 39)
    assert not auto_pack("cpu", 0, 1 << 40)  # off on the CPU
    model = tiny(**CONFIGS["qwen2"])
    r = ModelRunner(model)
    assert r.pack_bytes() == r.pack() > 0  # the size the choice is made on is what pack() takes


def test_packed_biases_and_hooked_projections():
    """Llama with attention and MLP biases: both groups packed with their biases, logits as HF's. A projection
    with a forward hook (or a replaced forward) is what HF runs, so its group keeps the module calls."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=103,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=True,
        mlp_bias=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, t in model.named_parameters():
            if name.endswith("bias"):
                t.normal_()  # HF starts biases at zero: make them matter
    seq = ids(["the quick brown fox jumps over the lazy dog!"])[0]
    pages = [5, 2, 9, 1, 7, 3, 11, 4, 8, 6, 10, 12]
    with torch.no_grad():
        ref = model(torch.tensor([seq])).logits[0]
        r = ModelRunner(model)
        r.pack()
        assert all(x is not None for group in r._packed for x in group)
        assert (runner_logits(model, seq, 9, pages, pack=True) - ref).abs().max().item() <= 1e-4
        mlp = model.model.layers[0].mlp
        handle = mlp.up_proj.register_forward_hook(lambda m, i, o: o * 3)
        ref = model(torch.tensor([seq])).logits[0]
        r.pack()
        assert (
            r._packed[0][2] is None and r._packed[0][0] is not None and r._packed[1][2] is not None
        )
        assert (runner_logits(model, seq, 9, pages, pack=True) - ref).abs().max().item() <= 1e-4
        handle.remove()
        mlp.gate_proj.forward = lambda x: torch.zeros(x.shape[:-1] + (64,))
        r.pack()
        assert r._packed[0][2] is None


def test_continuous_batching_stops_and_small_cache():
    model = tiny(**CONFIGS["gqa7"])
    prompts = ids(PROMPTS + ["0123456789" * 3, "zz"])
    free = HFEngine(model, TOK).generate(prompts, SamplingParams(temperature=0, max_tokens=30))
    stop = (free[0].token_ids[5], free[2].token_ids[11])  # tokens greedy decoding does reach
    sp = SamplingParams(n=2, temperature=0, max_tokens=30, stop_token_ids=stop)
    ref = HFEngine(model, TOK).generate(prompts, sp)
    # 3 rows and room for ~2 sequences of KV: admission waits for finished rows and freed pages.
    bpp = KVCache.bytes_per_page(2, 4, 1, 8, torch.float32)
    eng = FastEngine(model, TOK, max_num_seqs=3, page_size=4, kv_cache_bytes=bpp * 30, sync_every=3)
    got = eng.generate(prompts, sp)
    assert eng.cache.num_pages == 30
    assert any(c.finish_reason == "stop" for c in ref) and any(
        c.finish_reason == "length" for c in ref
    )
    for a, b in zip(ref, got):
        assert (b.prompt_index, b.token_ids, b.finish_reason, b.text) == (
            a.prompt_index,
            a.token_ids,
            a.finish_reason,
            a.text,
        )


def test_sequence_that_cannot_fit_is_a_clear_error():
    model = tiny(family="qwen2")
    bpp = KVCache.bytes_per_page(2, 16, 2, 8, torch.float32)
    eng = FastEngine(model, TOK, kv_cache_bytes=bpp * 4)
    with pytest.raises(ValueError, match="KV cache"):
        eng.generate(ids(["abc"]), SamplingParams(max_tokens=200))


def test_release_then_generate_again():
    model = tiny(family="llama")
    eng = FastEngine(model, TOK)
    sp = SamplingParams(temperature=0, max_tokens=8)
    a = eng.generate(ids(PROMPTS), sp)
    eng.release()
    assert eng.cache is None
    assert [c.token_ids for c in eng.generate(ids(PROMPTS), sp)] == [c.token_ids for c in a]


def test_unsupported_architecture_falls_back_to_hf():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=103, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    )
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        eng = FastEngine(model, TOK)
    assert eng.fallback is not None and any("falling back" in str(x.message) for x in w)
    sp = SamplingParams(temperature=0, max_tokens=5)
    assert [c.token_ids for c in eng.generate(ids(["abc"]), sp)] == [
        c.token_ids for c in HFEngine(model, TOK).generate(ids(["abc"]), sp)
    ]


def test_peft_lora_model():
    peft = pytest.importorskip("peft")
    base = tiny(family="qwen2")
    cfg = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
        lora_dropout=0.1,
    )
    model = peft.get_peft_model(base, cfg)
    model.train()
    sp = SamplingParams(n=2, temperature=0, max_tokens=20)
    ref = HFEngine(model, TOK).generate(ids(PROMPTS), sp)
    eng = FastEngine(model, TOK, pack_weights=True)
    got = eng.generate(ids(PROMPTS), sp)
    assert eng.fallback is None and model.training
    # q/v carry adapters: that group keeps the module calls; gate/up (no adapter) is packed
    assert all(w is None and b is None and gu is not None for w, b, gu, _ in eng.runner._packed)
    assert [c.token_ids for c in got] == [c.token_ids for c in ref]
    with model.disable_adapter():  # the adapter matters: without it the tokens change
        assert [c.token_ids for c in eng.generate(ids(PROMPTS), sp)] != [c.token_ids for c in got]


def test_a_capture_that_runs_out_of_memory_retries_once_then_runs_eagerly(monkeypatch):
    """A capture cannot free torch's cached blocks to make room, so running out ends that capture, empties the
    cache and tries once more; a second failure leaves the bucket to eager steps. Any other error is raised as
    it was, after the capture is ended. (The capture itself needs a GPU: CUDA calls are stood in for here.)"""
    import contextlib

    from aha.rollout.fast.batch import Batch

    calls = []

    class Graph:
        def capture_begin(self, pool):
            calls.append("begin")

        def capture_end(self):
            calls.append("end")

    class Stream:
        def wait_stream(self, other):
            pass

    cuda = torch.cuda
    monkeypatch.setattr(cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(cuda, "current_stream", lambda *a: Stream())
    batch = Batch.__new__(Batch)
    batch.graphs, batch.capturable, batch.pool, batch.side = {}, {(4, "sample")}, object(), Stream()
    failures = []

    def run(b, mode):
        if failures:
            raise failures.pop(0)
        return None

    batch._run = run
    failures[:] = [torch.cuda.OutOfMemoryError("no room")]  # once: retried after emptying the cache
    graph, out = batch._capture_one(4, "sample")
    assert calls == ["begin", "end", "empty_cache", "begin", "end"]
    assert batch.graphs[(4, "sample")] == (graph, None)
    calls.clear()
    batch.graphs.clear()
    failures[:] = [torch.cuda.OutOfMemoryError("no room")] * 2  # twice: eager from now on
    assert batch._capture_one(4, "sample") is None
    assert calls == ["begin", "end", "empty_cache", "begin", "end"]
    assert not batch.graphs and (4, "sample") not in batch.capturable
    failures[:] = [ValueError("a bug")]  # anything else: raised, the capture ended first
    calls.clear()
    with pytest.raises(ValueError, match="a bug"):
        batch._capture_one(4, "sample")
    assert calls == ["begin", "end"]
