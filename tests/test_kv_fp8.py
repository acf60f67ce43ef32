"""FastEngine's fp8 KV cache (kv_cache_dtype="fp8"): float8 e4m3 values with one fp32 scale per token and KV
head, on the CPU (torch paths). The Triton kernels are checked against these paths in
test_fast_engine_triton.py.
"""

import pytest
import torch

from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import SamplingParams
from aha.rollout.fast import FastEngine, kv_bytes_per_token
from aha.rollout.fast.attention import decode_attention
from aha.rollout.fast.kv_cache import FP8, KVCache, dequantize, quantize

TOK = char_tokenizer()
PROMPTS = ["hello world", "abc", "the quick brown fox jumps", "x", "0123456789" * 2]
S = 4


@pytest.fixture(scope="module")
def model():
    m = tiny_model(family="qwen2", hidden_size=56, num_heads=7, num_kv_heads=1)
    m.generation_config.eos_token_id = None
    return m


def engine(model, pages: int, **kw):
    bpp = KVCache.bytes_per_page(2, S, 1, 8, FP8)
    return FastEngine(
        model, TOK, page_size=S, kv_cache_bytes=bpp * (pages + 1), kv_cache_dtype="fp8", **kw
    )


def ids(texts):
    return [TOK.encode(t) for t in texts]


def test_quantize_keeps_every_head_to_the_format_precision():
    """Heads of very different magnitudes (1e-4 .. 1e3) each keep e4m3's precision relative to their own
    largest value, where one global scale would flush the small heads to zero: within half a step (2**-4 of
    the value, 3 mantissa bits) above e4m3's smallest normal number, within half a subnormal step (2**-10 of
    the scale) below it."""
    g = torch.Generator().manual_seed(0)
    mags = torch.tensor([1e-4, 1e-2, 1.0, 30.0, 1e3])
    x = torch.randn(6, 5, 64, generator=g) * mags[None, :, None]
    x8, scale = quantize(x)
    assert x8.dtype == FP8 and scale.shape == (6, 5) and scale.dtype == torch.float32
    back = dequantize(x8, scale, torch.float32)
    err, sc = (back - x).abs(), scale[..., None].expand_as(x)
    normal = x.abs() >= sc * 2**-6
    assert (err[normal] <= x.abs()[normal] * 2**-4 * 1.0001).all()
    assert (err[~normal] <= sc[~normal] * 2**-10 * 1.0001).all()
    # the largest value is exact (up to fp32 rounding of x / scale * scale)
    torch.testing.assert_close(back.abs().amax(-1), x.abs().amax(-1), rtol=1e-6, atol=0)
    assert (back != 0).float().mean() > 0.99  # the 1e-4 head is not flushed


def test_decode_attention_reads_the_quantized_cache_like_a_float64_reference():
    g = torch.Generator().manual_seed(1)
    B, NH, KVH, D, P = 3, 6, 2, 16, 8
    k, v = (torch.randn(30 * P, KVH, D, generator=g) for _ in range(2))
    k[::5] *= 40  # tokens of larger keys, as Qwen2.5's biases make them
    (k8, ks), (v8, vs) = quantize(k), quantize(v)
    table = torch.randperm(30, generator=g)[:24].view(B, 8).int()
    lens = torch.tensor([1, 13, 64], dtype=torch.int32)
    q = torch.randn(B, NH, D, generator=g)
    out = decode_attention(q, k8, v8, table, lens, P, D**-0.5, k_scale=ks, v_scale=vs)
    kd, vd = dequantize(k8, ks, torch.float64), dequantize(v8, vs, torch.float64)
    for b in range(B):
        pos = torch.arange(int(lens[b]))
        slots = table[b, pos // P].long() * P + pos % P
        for h in range(NH):
            kh = h // (NH // KVH)
            w = torch.softmax(kd[slots, kh] @ q[b, h].double() * D**-0.5, 0)
            torch.testing.assert_close(out[b, h].double(), w @ vd[slots, kh], atol=1e-5, rtol=1e-5)


def test_fp8_engine_is_close_to_the_full_precision_one_and_half_its_size(model):
    prompts = ids(PROMPTS)
    sp = SamplingParams(n=2, temperature=0, max_tokens=6)
    full = FastEngine(model, TOK, page_size=S).generate(prompts, sp)
    eng = engine(model, 400)
    got = eng.generate(prompts, sp)
    # the first token comes from the prompt's prefill through the dequantized cache
    for a, b in zip(got, full, strict=True):
        assert abs(a.logprobs[0] - b.logprobs[0]) < 0.05
    agree = sum(a.token_ids == b.token_ids for a, b in zip(got, full))
    assert agree >= len(full) - 2
    per = kv_bytes_per_token(model, kv_cache_dtype="fp8")
    assert per == 2 * 2 * 1 * (8 * 1 + 4)  # K and V x 2 layers x 1 KV head x (8 bytes + a scale)
    assert eng.cache.nbytes == eng.cache.num_pages * S * per
    assert kv_bytes_per_token(model.config, torch.bfloat16, kv_cache_dtype="fp8") == per
    assert eng.stats["kv_cache_mib"] * 2**20 == eng.cache.nbytes


@pytest.mark.parametrize(
    "sp",
    [
        SamplingParams(n=3, temperature=0, max_tokens=40),
        SamplingParams(n=3, temperature=1.0, max_tokens=40, seed=7),
    ],
    ids=["greedy", "sampled"],
)
def test_fp8_tiny_cache_preempts_and_gives_the_samples_of_a_large_cache(model, sp):
    """n = 3 samples share the prompt's full pages and copy its last partial page (with its scales); a
    preempted sequence is re-prefilled and quantized again."""
    prompts = ids(PROMPTS)
    ref = engine(model, 400, sync_every=4).generate(prompts, sp)
    small = engine(model, 24, sync_every=4, max_num_seqs=6)
    got = small.generate(prompts, sp)
    assert small.stats["preemptions"] > 0
    for x, y in zip(got, ref, strict=True):
        assert x.token_ids == y.token_ids
        assert max(abs(u - v) for u, v in zip(x.logprobs, y.logprobs)) <= 1e-4


def test_kv_cache_dtype_is_checked_in_one_line(model):
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of auto, fp8, got 'int8'"):
        FastEngine(model, TOK, kv_cache_dtype="int8")


def test_hf_generate_refuses_an_fp8_cache_in_one_line(model):
    from aha.rollout.factory import make_engine

    with pytest.raises(ValueError, match="set engine=fast or kv_cache_dtype=auto") as e:
        make_engine("auto", model, TOK, kv_cache_dtype="fp8")  # auto on the CPU: HF generate
    assert "\n" not in str(e.value)
    assert make_engine("fast", model, TOK, kv_cache_dtype="fp8").kv_cache_dtype == "fp8"
    from aha.config import ConfigError, load_config
    from aha.train.config import TrainConfig

    with pytest.raises(
        ConfigError, match="kv_cache_dtype.*set engine=fast"
    ):  # before any model loads
        load_config(TrainConfig, None, ["engine=hf", "kv_cache_dtype=fp8"])


def test_memory_plan_prices_the_fp8_cache():
    from aha.train.memory import ModelShape, RunSpec, engine_parts

    # Qwen2.5-1.5B: 28 layers, 2 KV heads of 128: 28,672 bytes a token in bf16, 14,784 in fp8 (+ scales)
    shape = ModelShape(1536, 28, 12, 2, 128, 8960, 151936, 1_540_000_000)
    assert shape.kv_bytes_per_token(2) == 28672 and shape.kv_bytes_per_token(2, "fp8") == 14784
    full, one, _ = engine_parts(shape, RunSpec(sequences=64, new_tokens=4096))
    full8, one8, _ = engine_parts(
        shape, RunSpec(sequences=64, new_tokens=4096, kv_cache_dtype="fp8")
    )
    assert full8 * 28672 == full * 14784 and one8 * 28672 == one * 14784


def test_a_training_step_with_the_fp8_cache(tmp_path):
    """aha train engine=fast kv_cache_dtype=fp8 on the CPU: the engine gets the setting, the step runs."""
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.grpo import GRPOTrainer

    keys = [
        "model.path=tiny-random",
        "task.name=arithmetic",
        "sampling.group_size=2",
        "batch.prompts_per_step=2",
        "sampling.max_new_tokens=6",
        "logging.progress=false",
        "logging.samples_every=0",
        "checkpoint.save_every=0",
        "steps=1",
        "engine=fast",
        "kv_cache_dtype=fp8",
        f"out={tmp_path}",
    ]
    tr = GRPOTrainer(load_config(TrainConfig, None, keys))
    m = tr.train_step(1)
    assert tr.engine.kv_cache_dtype == "fp8" and tr.engine.cache.k.dtype == FP8
    assert m["len/mean"] == 6


def test_fp8_without_fast_engine_support_is_a_config_error(model, monkeypatch):
    """A model FastEngine cannot run (it would fall back to HF generate, with no fp8 cache), or a GPU without
    float8 (compute capability < 8.9): one-line config errors, not a silent bf16 cache or a traceback."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from aha.config import ConfigError

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(
        ConfigError, match="kv_cache_dtype.*needs FastEngine.*set kv_cache_dtype=auto"
    ):
        FastEngine(gpt2, TOK, kv_cache_dtype="fp8")
    with pytest.warns(UserWarning, match="falling back to HFEngine"):
        FastEngine(gpt2, TOK)  # without fp8 the fallback stands
    eng = FastEngine(model, TOK, kv_cache_dtype="fp8")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA A100")
    with pytest.raises(
        ConfigError, match="compute capability 8.9.*NVIDIA A100.*set kv_cache_dtype=auto"
    ):
        eng._check_fp8(torch.device("cuda"))


def test_fp8_with_engine_auto_on_the_cpu_stops_before_the_model_loads(tmp_path, monkeypatch):
    from aha.config import ConfigError, load_config
    from aha.schema import ModelConfig
    from aha.train.config import TrainConfig
    from aha.train.grpo import GRPOTrainer

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ModelConfig, "load", no_load)
    # the CPU named: on a GPU machine engine=auto is FastEngine and the model loads
    cfg = load_config(
        TrainConfig,
        None,
        ["model.path=tiny-random", "model.device=cpu", "kv_cache_dtype=fp8", f"out={tmp_path}"],
    )
    with pytest.raises(
        ConfigError, match="engine=auto on the CPU generates with HF generate: set engine=fast"
    ):
        GRPOTrainer(cfg)
