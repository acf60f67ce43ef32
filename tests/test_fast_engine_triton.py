"""The Triton kernels of FastEngine against their torch fallbacks (which test_fast_engine.py checks against HF).

Runs on a CUDA device, or on the CPU through the Triton interpreter (TRITON_INTERPRET=1, slow); skipped where
triton is not importable (the usual CI machine).
"""

import os

import pytest
import torch

from aha._triton import HAS_TRITON

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not HAS_TRITON or (DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs triton on a GPU, or TRITON_INTERPRET=1",
)
DTYPES = [torch.float32, torch.bfloat16] if DEV == "cuda" else [torch.float32]


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The Triton kernels, even where conftest turned them off for the rest of the suite (CPU)."""
    monkeypatch.setenv("AHA_FAST_TRITON", "1")


def tol(dtype):
    return dict(atol=2e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)


def both(monkeypatch, fn):
    """fn() with the Triton kernels, then with the torch fallbacks."""
    fast = fn()
    monkeypatch.setenv("AHA_FAST_TRITON", "0")
    ref = fn()
    monkeypatch.setenv("AHA_FAST_TRITON", "1")
    return fast, ref


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_and_silu(monkeypatch, dtype):
    from aha.rollout.fast.layers import rms_norm, silu_mul

    g = torch.Generator(device=DEV).manual_seed(0)
    x, r = (torch.randn(5, 48, generator=g, device=DEV).to(dtype) for _ in range(2))
    w = torch.rand(48, generator=g, device=DEV).to(dtype) + 0.5
    for res in (None, r):
        (o1, r1), (o2, r2) = both(monkeypatch, lambda: rms_norm(x, w, 1e-6, res))
        torch.testing.assert_close(o1, o2, **tol(dtype))
        torch.testing.assert_close(r1, r2, **tol(dtype))
    a, b = both(monkeypatch, lambda: silu_mul(x, r))
    torch.testing.assert_close(a, b, **tol(dtype))
    gu = torch.randn(5, 2 * 40, generator=g, device=DEV).to(dtype)  # a packed gate/up output
    a, b = both(monkeypatch, lambda: silu_mul(gu[:, :40], gu[:, 40:]))
    torch.testing.assert_close(a, b, **tol(dtype))
    torch.testing.assert_close(a, silu_mul(gu[:, :40].contiguous(), gu[:, 40:].contiguous()))


@pytest.mark.parametrize("packed", [False, True], ids=["separate", "packed"])
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_cache(monkeypatch, dtype, qk_norm, packed):
    from aha.rollout.fast.layers import rope_cache

    g = torch.Generator(device=DEV).manual_seed(1)
    T, NH, KVH, D = 6, 7, 1, 16
    if packed:  # column slices of one q/k/v GEMM's output, read in place
        qkv = torch.randn(T, (NH + 2 * KVH) * D, generator=g, device=DEV).to(dtype)
        q, k, v = qkv[:, : NH * D], qkv[:, NH * D : (NH + KVH) * D], qkv[:, (NH + KVH) * D :]
    else:
        q = torch.randn(T, NH * D, generator=g, device=DEV).to(dtype)
        k, v = (torch.randn(T, KVH * D, generator=g, device=DEV).to(dtype) for _ in range(2))
    ang = torch.arange(64, device=DEV)[:, None] * (
        1e-2 ** (torch.arange(D // 2, device=DEV) / (D // 2))
    )
    cos, sin = torch.cat([ang, ang], -1).cos().to(dtype), torch.cat([ang, ang], -1).sin().to(dtype)
    pos = torch.tensor([0, 3, 7, 20, 21, 63], device=DEV)
    slot = torch.tensor([9, 2, 4, 0, 11, 5], device=DEV)
    nw = (torch.rand(D, generator=g, device=DEV) + 0.5).to(dtype) if qk_norm else None

    def run():
        kc, vc = (torch.full((16, KVH, D), 7.0, device=DEV, dtype=dtype) for _ in range(2))
        qo = rope_cache(q, k, v, cos, sin, pos, slot, kc, vc, NH, KVH, nw, nw, 1e-6)
        return qo, kc, vc

    for a, b in zip(*both(monkeypatch, run)):
        torch.testing.assert_close(a, b, **tol(dtype))


@pytest.mark.parametrize("kv", ["auto", "fp8"])
@pytest.mark.parametrize("splits", [1, 4, "4-fused"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_attention_paged(monkeypatch, dtype, splits, kv):
    """Against the torch path; "4-fused": the last split of each sequence and KV head merges them (counters)
    instead of the merge kernel, and leaves the counters zero for the next call."""
    from aha.rollout.fast.attention import decode_attention
    from aha.rollout.fast.kv_cache import quantize

    g = torch.Generator(device=DEV).manual_seed(2)
    B, NH, KVH, D, S = 4, 14, 2, 64, 16
    kc, vc = (torch.randn(40 * S, KVH, D, generator=g, device=DEV).to(dtype) for _ in range(2))
    scales = {}
    if kv == "fp8":  # e4m3 values and a scale per token and head; some tokens of large keys
        kc[::7] *= 50
        (kc, ks), (vc, vs) = quantize(kc), quantize(vc)
        scales = dict(k_scale=ks, v_scale=vs)
    table = (
        torch.randperm(40, generator=torch.Generator().manual_seed(0))[:32]
        .view(B, 8)
        .to(DEV, torch.int32)
    )
    lens = torch.tensor([1, 17, 100, 128], device=DEV, dtype=torch.int32)
    q = torch.randn(B, NH, D, generator=g, device=DEV).to(dtype)
    cnt = torch.zeros(B * KVH + 3, dtype=torch.int32, device=DEV)
    extra = dict(counters=cnt) if splits == "4-fused" else {}
    n = 4 if splits == "4-fused" else splits
    a, b = both(
        monkeypatch,
        lambda: decode_attention(q, kc, vc, table, lens, S, D**-0.5, n, **scales, **extra),
    )
    assert not cnt.any()
    # fp8's large keys make logits of ~1e2: fp32 sums in another order differ by ~1e-5
    big = kv == "fp8" and dtype == torch.float32
    torch.testing.assert_close(a, b, **(dict(atol=1e-4, rtol=1e-4) if big else tol(dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_cache_fp8(monkeypatch, dtype):
    """Quantizing writes: the same per-head scales, and e4m3 values equal or one step apart (the kernel rounds
    the rotated k once, the torch path after each op)."""
    from aha.rollout.fast.kv_cache import FP8, raw
    from aha.rollout.fast.layers import rope_cache

    g = torch.Generator(device=DEV).manual_seed(4)
    T, NH, KVH, D = 6, 4, 2, 16
    q = torch.randn(T, NH * D, generator=g, device=DEV).to(dtype)
    k, v = (torch.randn(T, KVH * D, generator=g, device=DEV).to(dtype) for _ in range(2))
    k[2] *= 300  # a token of large keys
    v[:, D:] *= 1e-3  # a head of small values
    ang = torch.arange(64, device=DEV)[:, None] * (
        1e-2 ** (torch.arange(D // 2, device=DEV) / (D // 2))
    )
    cos, sin = torch.cat([ang, ang], -1).cos().to(dtype), torch.cat([ang, ang], -1).sin().to(dtype)
    pos = torch.tensor([0, 3, 7, 20, 21, 63], device=DEV)
    slot = torch.tensor([9, 2, 4, 0, 11, 5], device=DEV)

    def run():
        kc, vc = (torch.zeros((16, KVH, D), device=DEV, dtype=FP8) for _ in range(2))
        ks, vs = (torch.zeros((16, KVH), device=DEV) for _ in range(2))
        qo = rope_cache(q, k, v, cos, sin, pos, slot, kc, vc, NH, KVH, k_scale=ks, v_scale=vs)
        return qo, kc, vc, ks, vs

    (qa, kca, vca, ksa, vsa), (qb, kcb, vcb, ksb, vsb) = both(monkeypatch, run)
    torch.testing.assert_close(qa, qb, **tol(dtype))
    for ca, cb, sa, sb in ((kca, kcb, ksa, ksb), (vca, vcb, vsa, vsb)):
        torch.testing.assert_close(sa, sb, **tol(dtype))
        # e4m3 values: one step is 2**-3 of the value, 2**-9 if subnormal
        ya, yb = ca.float(), cb.float()
        near = (ya - yb).abs() <= torch.maximum(ya.abs(), yb.abs()) * 2**-3 + 2**-9
        assert (raw(ca) == raw(cb)).float().mean() > 0.9
        if DEV == "cuda" and dtype == torch.float32:
            assert near.all()
        else:
            # bf16: the torch path rounds after each op of the rotation (a cancellation can move the rounded
            # value by more than one e4m3 step); CPU: Triton's interpreter rounds fp32 -> e4m3 without carrying
            # into the exponent (124 -> 64)
            assert near.float().mean() > 0.95


def test_fused_sampler_greedy_and_law():
    """Greedy = argmax; sampled tokens are those of the torch sampler with the same keys (whose law
    test_fast_engine.py checks over 20,000 draws) and, at the GPU's size, follow the law themselves."""
    from aha.rollout.fast.sampler import sample_fused, sample_torch

    V, B = 10, 24 if DEV == "cpu" else 100000  # the interpreter runs every program in Python
    logits = torch.linspace(1.0, -1.5, V, device=DEV)[None].repeat(B, 1)
    temp = torch.tensor([0.7], device=DEV)
    seed, seq = torch.tensor([123], device=DEV), torch.arange(B, device=DEV)
    t = torch.zeros(B, dtype=torch.long, device=DEV)
    tok, lp = sample_fused(
        logits.bfloat16() if DEV == "cuda" else logits, temp, seed, seq, t, greedy=True
    )
    assert (tok == 0).all()
    torch.testing.assert_close(lp, torch.log_softmax(logits, -1)[:, 0], atol=2e-2, rtol=0)
    tok, lp = sample_fused(logits, temp, seed, seq, t, greedy=False)
    p = torch.softmax(logits[0] / 0.7, -1).double()
    torch.testing.assert_close(lp, torch.log(p).float()[tok], atol=1e-5, rtol=0)
    ref, _ = sample_torch(logits, 0.7, keys=(seed, seq, t))
    assert (tok == ref).float().mean() >= 0.999  # a 1-ulp near-tie may part a rare row
    assert len(set(tok.tolist())) > 1
    if DEV == "cuda":
        counts = torch.bincount(tok, minlength=V).double()
        chi2 = (((counts - B * p) ** 2) / (B * p)).sum().item()
        assert chi2 < 9 + 6 * 18**0.5  # df = 9: mean + 6 sd
    tok2, _ = sample_fused(logits, temp, seed, seq, t + 1, greedy=False)
    assert (tok2 != tok).any()  # a new token index draws new noise
    if DEV == "cuda":  # a real vocabulary: split into parts
        big = torch.randn(8, 151936, device=DEV) * 3
        s8, t8 = seq[:8], t[:8]
        tk, l = sample_fused(big.bfloat16(), temp, seed, s8, t8, greedy=True)
        assert (tk == big.bfloat16().float().argmax(-1)).all()
        tk, l = sample_fused(big, temp, seed, s8, t8, greedy=False)
        torch.testing.assert_close(
            l, torch.log_softmax(big / 0.7, -1).gather(1, tk[:, None])[:, 0], atol=1e-4, rtol=0
        )


def test_noise_kernel_equals_torch_bitwise_and_sampler_paths_agree():
    """The Triton noise equals the torch noise bit for bit, so the fused sampler and the torch sampler pick
    the same tokens from the same fp32 logits (a near-tie of 1 ulp could part them; none at this seed)."""
    from aha.rollout.fast.noise import uniform, uniform_torch
    from aha.rollout.fast.sampler import sample_fused, sample_torch

    seed = torch.tensor([(1 << 61) + 12345], device=DEV)
    seq = torch.tensor([0, 1, 7, 2**33 + 5, 40], device=DEV)
    t = torch.tensor([0, 0, 3, 16383, 2**20], device=DEV)
    V = 3000 if DEV == "cpu" else 151936
    assert torch.equal(uniform(seed, seq, t, V), uniform_torch(seed, seq, t, V))
    g = torch.Generator(device=DEV).manual_seed(3)
    logits = torch.randn(5, V, generator=g, device=DEV) * 2
    temp = torch.tensor([0.9], device=DEV)
    a, la = sample_fused(logits, temp, seed, seq, t, greedy=False)
    b, lb = sample_torch(logits, 0.9, keys=(seed, seq, t))
    assert torch.equal(a, b)
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pack", [False, True], ids=["modules", "packed"])
def test_engine_greedy_matches_hf_with_kernels(pack):
    from aha.models.tiny import char_tokenizer, tiny_model
    from aha.rollout import HFEngine, SamplingParams
    from aha.rollout.fast import FastEngine

    tok = char_tokenizer()
    model = tiny_model(family="qwen3", hidden_size=56, num_heads=7, num_kv_heads=1).to(DEV)
    model.generation_config.eos_token_id = None
    prompts = [tok.encode(t) for t in ["hello world", "abc", "the quick brown fox"]]
    # 16 tokens (the interpreter's time goes with rows x steps): each row's decode still writes across a page
    # boundary (page_size 16; the longest into a third page) and the host reads the ring twice (sync_every 8)
    sp = SamplingParams(n=2, temperature=0, max_tokens=16)
    ref = HFEngine(model, tok).generate(prompts, sp)
    eng = FastEngine(model, tok, pack_weights=pack)
    got = eng.generate(prompts, sp)
    assert eng.stats["mode"] == "greedy" and (eng.stats["packed_mib"] > 0) == pack
    assert [c.token_ids for c in got] == [c.token_ids for c in ref]
    for a, b in zip(ref, got):
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3


gpu = pytest.mark.skipif(DEV != "cuda", reason="CUDA graphs, pinned copies and events need a GPU")


@gpu
def test_cuda_graphs_continuous_batching_stops_lora():
    peft = pytest.importorskip("peft")
    from aha.models.tiny import char_tokenizer, tiny_model
    from aha.rollout import HFEngine, SamplingParams
    from aha.rollout.fast import FastEngine

    tok = char_tokenizer()
    model = tiny_model(family="qwen2", hidden_size=56, num_heads=7, num_kv_heads=1).to(DEV)
    model.generation_config.eos_token_id = None
    prompts = [
        tok.encode(t)
        for t in ["hello world", "abc", "the quick brown fox jumps", "0123456789" * 3, "zz"]
    ]
    free = HFEngine(model, tok).generate(prompts, SamplingParams(temperature=0, max_tokens=40))
    sp = SamplingParams(
        n=3,
        temperature=0,
        max_tokens=40,
        stop_token_ids=(free[0].token_ids[7], free[2].token_ids[15]),
    )
    ref = HFEngine(model, tok).generate(prompts, sp)
    eng = FastEngine(model, tok, max_num_seqs=4, sync_every=4)  # rows recycled, batch compacted
    got = eng.generate(prompts, sp)
    assert eng.batch.graphs, "decode steps should run as CUDA graphs"
    assert eng.stats["packed_mib"] > 0, "packed q/k/v and gate/up by default on a GPU"
    assert any(c.finish_reason == "stop" for c in ref)
    assert [(c.token_ids, c.finish_reason) for c in got] == [
        (c.token_ids, c.finish_reason) for c in ref
    ]
    # top-p sampling: graph for the forward, torch sampler; seeded runs repeat
    sp2 = SamplingParams(n=4, temperature=0.8, top_p=0.9, max_tokens=20, seed=7)
    a, b = eng.generate(prompts, sp2), eng.generate(prompts, sp2)
    assert eng.stats["mode"] == "logits" and [c.token_ids for c in a] == [c.token_ids for c in b]
    # in-place change seen by the captured graphs
    with (
        torch.no_grad()
    ):  # a plain and both packed groups (their copies refreshed under the same graphs)
        model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
        model.model.layers[0].mlp.gate_proj.weight.mul_(-2.0)
        model.model.layers[1].self_attn.k_proj.bias.add_(0.5)
    ref2 = HFEngine(model, tok).generate(prompts, sp)
    assert [c.token_ids for c in eng.generate(prompts, sp)] == [c.token_ids for c in ref2]
    # a parameter on new storage: the graphs are captured again, into a new pool (torch asserts when a
    # capture reuses the pool of graphs that are all gone but not yet freed)
    old = dict(eng.batch.graphs)
    w = model.model.layers[1].mlp.down_proj.weight
    w.data = w.data.clone()
    assert [c.token_ids for c in eng.generate(prompts, sp)] == [c.token_ids for c in ref2]
    assert eng.batch.graphs and all(eng.batch.graphs.get(k) is not g for k, g in old.items())
    # released (as with engine_release): the same shapes are captured again without the eager warm-up
    warmed = set(eng.runner.warmed)
    eng.release()
    assert [c.token_ids for c in eng.generate(prompts, sp)] == [c.token_ids for c in ref2]
    assert eng.batch.graphs and eng.runner.warmed == warmed
    # buckets are captured at first use: rows that all run to max_tokens together use only the largest, and
    # the rows that finished early above ran through buckets captured mid-generation
    assert len(eng.batch.graphs) > 1
    eng.release()
    eng.generate(prompts[:1], SamplingParams(n=4, temperature=0, max_tokens=8))
    assert set(eng.batch.graphs) == {(4, "greedy")}
    assert eng.batch.capturable == {(1, "greedy"), (2, "greedy"), (4, "greedy")}
    # LoRA: adapter flags are part of the graph key
    lora = peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=4, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
        ),
    )
    eng = FastEngine(lora, tok)
    ref3 = HFEngine(lora, tok).generate(prompts, sp)
    assert [c.token_ids for c in eng.generate(prompts, sp)] == [c.token_ids for c in ref3]
    with lora.disable_adapter():
        assert [c.token_ids for c in eng.generate(prompts, sp)] == [c.token_ids for c in ref2]


@gpu
def test_cuda_graphs_with_preemption_stop_strings_and_streaming():
    """Graphs + pinned copies: a cache that forces preemption gives the large cache's rows (fp32: identical
    except at a rare near-tie moved by another GEMM shape), stop strings cut as HF does, the stream is the
    completion, and an abort ends only its own row."""
    from aha.models.tiny import char_tokenizer, tiny_model
    from aha.rollout import HFEngine, SamplingParams
    from aha.rollout.fast import FastEngine, kv_bytes_per_token

    tok = char_tokenizer()
    model = tiny_model(family="qwen2", hidden_size=56, num_heads=7, num_kv_heads=1).to(DEV)
    model.generation_config.eos_token_id = None
    prompts = [
        tok.encode(t) for t in ["hello world", "abc", "the quick brown fox", "0123456789" * 2]
    ]
    for sp in (
        SamplingParams(n=4, temperature=0, max_tokens=200),
        SamplingParams(n=4, temperature=1.0, max_tokens=200, seed=2),
    ):
        big = FastEngine(model, tok, sync_every=4)
        ref = big.generate(prompts, sp)
        small = FastEngine(
            model, tok, sync_every=4, kv_cache_bytes=kv_bytes_per_token(model) * 1200
        )
        got = small.generate(prompts, sp)
        assert small.batch.graphs and small.stats["preemptions"] > 0
        same = sum(a.token_ids == b.token_ids for a, b in zip(ref, got))
        assert same >= len(ref) - 2, f"{same}/{len(ref)} rows identical"
    free = HFEngine(model, tok).generate(prompts, SamplingParams(temperature=0, max_tokens=60))
    sp = SamplingParams(n=2, temperature=0, max_tokens=60, stop=[free[1].text[20:23], "zz"])
    streamed: dict[int, list[int]] = {}
    got = FastEngine(model, tok, sync_every=4).generate(
        prompts, sp, on_tokens=lambda i, new: streamed.setdefault(i, []).extend(new) or i != 7
    )
    ref = HFEngine(model, tok).generate(prompts, sp)
    assert any(c.finish_reason == "stop" for c in ref)
    for i, (a, b) in enumerate(zip(ref, got)):
        assert streamed[i] == b.token_ids
        if i == 7:
            assert b.finish_reason == "abort" and b.token_ids == a.token_ids[: len(b.token_ids)]
        else:
            assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
