"""FastEngine's fp8 decode weights (weights_dtype="fp8", rollout/fast/fp8_linear.py): e4m3 weights with a scale per
output channel, activations quantized per row by the RMSNorm / SiLU kernels, fp8 GEMMs. The torch paths are
checked against float64 and the whole decode path against a teacher-forced HF forward whose projections are
swapped for the same quantized arithmetic; the Triton kernels against the torch paths, on a GPU of compute
capability 8.9+ or on the CPU through the Triton interpreter (TRITON_INTERPRET=1, as conftest sets).
"""

import itertools
import os

import pytest
import torch

from aha._triton import HAS_TRITON
from aha.config import ConfigError
from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import SamplingParams
from aha.rollout.fast import FastEngine
from aha.rollout.fast import fp8_linear as f8
from aha.rollout.fast import model_runner as mr
from aha.rollout.fast.layers import rms_norm, silu_mul

TOK = char_tokenizer()
DEV = "cuda" if torch.cuda.is_available() else "cpu"
GPU = DEV == "cuda" and torch.cuda.get_device_capability() >= (8, 9)
KERNELS = HAS_TRITON and (GPU or (DEV == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"))


@pytest.fixture
def kernels(monkeypatch):
    """The Triton kernels (even where conftest turned them off for the rest of the suite, the CPU)."""
    if not KERNELS:
        pytest.skip("needs triton on a GPU of compute capability 8.9+, or TRITON_INTERPRET=1")
    monkeypatch.setenv("AHA_FAST_TRITON", "1")


def codes_match(a: torch.Tensor, b: torch.Tensor) -> None:
    """The same e4m3 codes: exactly under the interpreter (_round_e4m3), all but a rare tie on a GPU (its
    conversion instruction and torch's may round a tie apart)."""
    differ = (a.float() != b.float()).float().mean().item()
    assert differ == 0 if DEV == "cpu" else differ < 1e-3, differ


def kernel_round(x: torch.Tensor, dtype) -> torch.Tensor:
    """fp32 -> dtype as a kernel rounds it: to nearest on a GPU (as torch does), toward zero to bf16 under the
    Triton interpreter."""
    if DEV == "cpu" and dtype == torch.bfloat16:
        return (x.float().view(torch.int32) & -65536).view(torch.float32).to(dtype)
    return x.to(dtype)


def test_weights_keep_e4m3_precision_per_output_channel():
    """Rows of very different magnitudes each keep e4m3's 3 mantissa bits relative to their own largest value
    (half a step, 2**-4 of the value, above the smallest normal), and the largest value of a row is exact."""
    g = torch.Generator().manual_seed(0)
    mags = torch.tensor([1e-4, 1e-2, 1.0, 30.0, 1e3])
    w = torch.randn(5, 300, generator=g) * mags[:, None]
    q, s = torch.empty(5, 300, dtype=f8.E4M3), torch.empty(5)
    f8.quantize_weight(w, q, s, chunk=2)  # chunks of rows give the same result as one pass
    back = q.float() * s[:, None]
    normal = w.abs() >= s[:, None] * 2**-6
    assert (back - w).abs()[normal].le(w.abs()[normal] * 2**-4 * 1.0001).all()
    torch.testing.assert_close(back.abs().amax(1), w.abs().amax(1), rtol=1e-6, atol=0)
    xq, xs = f8.quantize_rows(w)
    assert torch.equal(xq.float(), q.float()) and torch.allclose(xs, s, rtol=1e-7, atol=0)


def test_reference_is_the_float64_product_of_the_dequantized_operands():
    g = torch.Generator().manual_seed(1)
    x, w, b = (
        torch.randn(5, 70, generator=g),
        torch.randn(9, 70, generator=g),
        torch.randn(9, generator=g),
    )
    xq, xs = f8.quantize_rows(x)
    wq, ws = torch.empty(9, 70, dtype=f8.E4M3), torch.empty(9)
    f8.quantize_weight(w, wq, ws)
    want = (xq.double() * xs.double()[:, None]) @ (
        wq.double() * ws.double()[:, None]
    ).T + b.double()
    got = f8.fp8_linear_torch(xq, xs, wq, ws, b, torch.float32)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    # and fp8 is what it costs: a few percent of the exact product
    err = (got.double() - (x.double() @ w.double().T + b.double())).norm() / want.norm()
    assert 1e-3 < err < 0.1


@pytest.mark.parametrize("M", [1, 7, 70])
def test_triton_gemm_matches_the_reference(kernels, M):
    """Every tile shape the kernel takes: one or several row blocks, split-K with and without a bias (the split
    sum adds it), a K that is no multiple of the block; against the float64 product of the dequantized
    operands (a GPU's fp8 MMA accumulates with fewer bits than fp32: a bound on the error's norm there)."""
    g = torch.Generator().manual_seed(M)
    configs = [(16, 32, 1, 4, 1), (32, 64, 2, 4, 1), (16, 64, 4, 4, 1), None]
    shapes = [(48, 200), (33, 600)] + ([(2048, 1536), (1536, 8960)] if DEV == "cuda" else [])
    for (N, K), cfg, bias in itertools.product(
        shapes, configs if M < 64 else configs[1::2], [False, True]
    ):
        x = torch.randn(M, K, generator=g).to(DEV)
        w = (torch.randn(N, K, generator=g) * 0.02).to(DEV)
        b = torch.randn(N, generator=g).to(DEV) if bias else None
        xq, xs = f8.quantize_rows(x)
        wq, ws = torch.empty(N, K, dtype=f8.E4M3, device=DEV), torch.empty(N, device=DEV)
        f8.quantize_weight(w, wq, ws)
        want = (xq.double() * xs.double()[:, None]) @ (wq.double() * ws.double()[:, None]).T
        want = want + (b.double() if bias else 0)
        got = f8.fp8_linear(xq, xs, wq, ws, b, torch.float32, cfg).double()
        case = f"{N}x{K} {cfg} bias={bias}"
        if DEV == "cpu":
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=case)
        else:  # Hopper's fp8 MMA adds its products with fewer bits than fp32: 1.4e-3 of the norm measured at
            # K = 8,960 (s12/gpu_tests_2.txt), small next to e4m3's own ~4e-2 but growing with K
            rel = ((got - want).norm() / want.norm()).item()
            worst = ((got - want).abs().max() / want.abs().max()).item()
            assert rel < 5e-3 and worst < 1e-2, (case, rel, worst)


@pytest.mark.parametrize("M", [1, 70])
def test_partial_sums_and_the_plain_gemm(kernels, M):
    """fp8_linear(partials=True) returns the split-K partial sums (their sum: the summed product; a bias or one
    split gives the product itself), and linear_partials (the same kernel on model-dtype operands, o_proj's)
    matches the float64 product, summed or as partial sums."""
    g = torch.Generator().manual_seed(M)
    N, K = (48, 600) if DEV == "cpu" else (1536, 1536)
    x = torch.randn(M, K, generator=g).to(DEV)
    w = (torch.randn(N, K, generator=g) * 0.02).to(DEV)
    xq, xs = f8.quantize_rows(x)
    wq, ws = torch.empty(N, K, dtype=f8.E4M3, device=DEV), torch.empty(N, device=DEV)
    f8.quantize_weight(w, wq, ws)
    cfg = (16, 64, 4, 4, 1)
    whole = f8.fp8_linear(xq, xs, wq, ws, None, torch.float32, cfg)
    part = f8.fp8_linear(xq, xs, wq, ws, None, torch.float32, cfg, partials=True)
    assert part.shape == (4, M, N) and part.dtype == torch.float32
    assert torch.equal(f8.sum_partials(part, torch.float32), whole)
    b = torch.randn(N, generator=g).to(DEV)
    assert f8.fp8_linear(xq, xs, wq, ws, b, torch.float32, cfg, partials=True).shape == (M, N)
    one = (16, 64, 1, 4, 1)
    assert f8.fp8_linear(xq, xs, wq, ws, None, torch.float32, one, partials=True).shape == (M, N)
    for dtype in (torch.float32, torch.bfloat16):
        xd, wd = x.to(dtype), w.to(dtype)
        want = xd.double() @ wd.double().T
        for cfg, bias in [
            ((16, 64, 2, 4, 1), None),
            ((32, 128, 1, 4, 1), b.to(dtype)),
            (None, None),
        ]:
            got = f8.linear_partials(xd, wd, bias, cfg=cfg)
            if got.dim() == 3:
                got = f8.sum_partials(got, torch.float32)
            else:
                assert got.dtype == dtype
            ref = want + (0 if bias is None else bias.double())
            tol = 1e-5 if dtype == torch.float32 and DEV == "cpu" else 2e-2
            rel = ((got.double() - ref).norm() / ref.norm()).item()
            assert rel < tol, (dtype, cfg, rel)


def test_interpreter_rounding_matches_torchs_conversion(kernels):
    """_round_e4m3 (the interpreter's stand-in for the GPU's conversion) gives torch's e4m3 value: carries into
    the exponent (7.99 -> 8), ties to even, subnormals, the largest value."""
    import triton
    import triton.language as tl

    @triton.jit
    def k(X, Y, N: tl.constexpr):
        r = tl.arange(0, N)
        tl.store(Y + r, f8._round_e4m3(tl.load(X + r)).to(Y.dtype.element_ty))

    g = torch.Generator().manual_seed(2)
    steps = torch.tensor(
        [7.99, -7.99, 1.9999, 0.0156, 0.00195, 0.00293, 448.0, -448.0, 0.0, 9.0, 11.0, 3.25]
    )
    x = (
        torch.cat([steps, torch.randn(4096 - len(steps), generator=g) * 40])
        .clamp(-448, 448)
        .to(DEV)
    )
    y = torch.empty(4096, dtype=f8.E4M3, device=DEV)
    k[(1,)](x, y, N=4096)
    assert torch.equal(y.float(), x.to(f8.E4M3).float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantizing_producers_match_the_torch_paths(kernels, dtype, monkeypatch):
    """rms_norm_fp8 / silu_mul_fp8 give the codes and scales of the unquantized kernels' output quantized by
    quantize_rows (the torch path), and the same residual; silu also in two passes (a row longer than
    SILU_ROW) and on strided halves of one gate/up output."""
    g = torch.Generator().manual_seed(3)
    for T, H in [(3, 48), (5, 300)] + ([(64, 1536), (64, 8960)] if DEV == "cuda" else []):
        x, r = (torch.randn(T, H, generator=g).to(DEV, dtype) for _ in range(2))
        w = (torch.rand(H, generator=g) + 0.5).to(DEV, dtype)
        for res in (None, r):
            (q, s), ro = f8.rms_norm_fp8(x, w, 1e-6, res)
            y, ro2 = rms_norm(x, w, 1e-6, res)
            q2, s2 = f8.quantize_rows(y)
            assert torch.equal(ro, ro2)
            codes_match(q, q2)
            torch.testing.assert_close(s, s2, rtol=1e-6, atol=0)
        # a split-K GEMM's partial sums (S, T, H) in place of x: their sum in the residual's dtype, then the same
        part = torch.randn(3, T, H, generator=g).to(DEV)
        (q, s), ro = f8.rms_norm_fp8(part, w, 1e-6, r)
        (q2, s2), ro2 = f8.rms_norm_fp8(
            kernel_round(f8.sum_partials(part, torch.float32), dtype), w, 1e-6, r
        )
        assert torch.equal(ro, ro2) and torch.equal(s, s2) and torch.equal(q.float(), q2.float())
        with pytest.raises(ValueError, match="need the residual"):
            f8.rms_norm_fp8(part, w, 1e-6)
        gu = torch.randn(T, 6 * H, generator=g).to(DEV, dtype)
        for row in (f8.SILU_ROW, 64):
            monkeypatch.setattr(f8, "SILU_ROW", row)
            q, s = f8.silu_mul_fp8(gu[:, : 3 * H], gu[:, 3 * H :])
            q2, s2 = f8.quantize_rows(silu_mul(gu[:, : 3 * H], gu[:, 3 * H :]))
            codes_match(q, q2)
            torch.testing.assert_close(s, s2, rtol=1e-6, atol=0)


def _fp8_reference(model, prompt_len: int, head: bool = False):
    """A copy of model whose q/k/v, gate/up and down (and lm head with `head`) apply the fp8 arithmetic (input
    quantized per row, weight per output channel, fp32 product) at positions >= prompt_len (decode steps) and the
    model's own weights on the prompt (the engine's prefill)."""
    import copy

    ref = copy.deepcopy(model)
    body = ref.model

    def swap(mod):
        w, b = mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
        wq, ws = torch.empty(w.shape, dtype=f8.E4M3), torch.empty(w.shape[0])
        f8.quantize_weight(w, wq, ws)

        def forward(x):
            plain = torch.nn.functional.linear(x, w, b)
            flat = x.reshape(-1, x.shape[-1])
            quant = f8.fp8_linear_torch(*f8.quantize_rows(flat), wq, ws, b, x.dtype)
            quant = quant.view(*x.shape[:-1], -1)
            pos = torch.arange(x.shape[-2]).view(*([1] * (x.dim() - 2)), -1, 1)
            return torch.where(pos >= prompt_len, quant, plain)

        mod.forward = forward

    for layer in body.layers:
        a, m = layer.self_attn, layer.mlp
        for mod in (a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj, m.down_proj):
            swap(mod)
    if head:
        ref.lm_head = copy.deepcopy(ref.lm_head)  # untied, so the embedding keeps its weights
        swap(ref.lm_head)
    return ref


@pytest.mark.parametrize("family, head", [("qwen2", False), ("llama", False), ("qwen2", True)])
def test_decode_on_fp8_weights_matches_a_teacher_forced_reference(family, head, monkeypatch):
    """The engine's sampled logprobs (torch paths, fp32 on the CPU) are the log-softmax of a teacher-forced
    forward with the same quantized arithmetic, token for token; and they are not the model's own. The two
    sum in different orders, so an activation at a rounding boundary of e4m3 can land one step apart (a few
    1e-3 on later tokens of that completion): most completions match to fp32 rounding, all to 2e-2. head: the
    lm head in fp8 too (FP8_LM_HEAD, off by default)."""
    monkeypatch.setattr(mr, "FP8_LM_HEAD", head)
    torch.manual_seed(0)
    model = tiny_model(family=family, hidden_size=64, num_heads=4, num_kv_heads=2)
    model.generation_config.eos_token_id = None
    prompt = TOK.encode("the quick brown fox")
    params = SamplingParams(n=8, temperature=1.0, max_tokens=12, seed=5)
    eng = FastEngine(model, TOK, weights_dtype="fp8")
    comps = eng.generate([prompt], params)
    ref = _fp8_reference(model, len(prompt), head).eval()
    exact, plain_d = 0, 0.0
    for c in comps:
        ids = torch.tensor([prompt + c.token_ids])
        with torch.no_grad():
            logits = ref(ids).logits[0, len(prompt) - 1 : -1].float()
            own = model(ids).logits[0, len(prompt) - 1 : -1].float()
        want = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
        got = torch.tensor(c.logprobs)
        torch.testing.assert_close(got, want, rtol=0, atol=2e-2)
        exact += bool((got - want).abs().max() < 1e-5)
        plain = torch.log_softmax(own, -1).gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
        plain_d = max(plain_d, (got - plain)[1:].abs().max().item())
    assert exact >= 6, exact
    assert plain_d > 1e-3  # the decode steps really ran on fp8 weights
    assert eng.stats["packed_mib"] > 0


def test_engine_reports_fp8_errors_in_one_line():
    model = tiny_model(hidden_size=32)
    with pytest.raises(ValueError, match="weights_dtype must be one of auto, fp8"):
        FastEngine(model, TOK, weights_dtype="int8")
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(
        tiny_model(hidden_size=32), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    with pytest.raises(
        ConfigError, match="layer 0's q/k/v_proj is not a plain nn.Linear.*weights_dtype=auto"
    ):
        FastEngine(lora, TOK, weights_dtype="fp8")


def test_training_config_refuses_fp8_weights_where_they_cannot_run():
    from aha.train.config import TrainConfig

    with pytest.raises(ConfigError, match="engine_weights_dtype.*engine=hf"):
        TrainConfig(engine="hf", engine_weights_dtype="fp8")
    cfg = TrainConfig(engine_weights_dtype="fp8")
    with pytest.raises(ConfigError, match="model.lora.r > 0"):
        cfg.model.lora.r = 8
        cfg.__post_init__()


def test_memory_plan_counts_the_fp8_copy_in_place_of_the_packed_one():
    """1 byte a weight of q/k/v, gate/up and down, plus a 4-byte scale per output channel; counted whether or not
    the plan would pack (the copy is what the engine decodes on)."""
    from aha.train.memory import ModelShape, RunSpec, packed_bytes

    shape = ModelShape(
        params=1_543_714_304,
        layers=28,
        hidden=1536,
        intermediate=8960,
        heads=12,
        kv_heads=2,
        head_dim=128,
        vocab=151936,
        tied=True,
    )
    per_layer = 1536 * (1536 + 2 * 256 + 2 * 8960) + 8960 * 1536
    scales = 4 * (1536 + 2 * 256 + 2 * 8960 + 1536)
    want = 28 * (per_layer + scales)
    for packed in (False, True):
        assert packed_bytes(shape, RunSpec(packed=packed, fp8_weights=True)) == want
    bf16 = packed_bytes(shape, RunSpec(packed=True))
    assert bf16 == 28 * 2 * 1536 * (1536 + 2 * 256 + 2 * 8960)
    assert want < 0.8 * bf16  # down added at 1 byte, the rest halved


@pytest.mark.skipif(not GPU, reason="needs a GPU of compute capability 8.9+")
def test_gpu_decode_matches_the_teacher_forced_reference():
    """On the GPU (compiled kernels, CUDA graphs): an fp8 engine's logprobs against the fp32 CPU reference."""
    torch.manual_seed(0)
    model = tiny_model(hidden_size=64, num_heads=4, num_kv_heads=2).cuda()
    model.generation_config.eos_token_id = None
    prompt = TOK.encode("the quick brown fox")
    comps = FastEngine(model, TOK, weights_dtype="fp8").generate(
        [prompt], SamplingParams(n=8, temperature=1.0, max_tokens=12, seed=5)
    )
    ref = _fp8_reference(model.cpu(), len(prompt)).eval()
    d = []
    for c in comps:
        with torch.no_grad():
            logits = ref(torch.tensor([prompt + c.token_ids])).logits[0, len(prompt) - 1 : -1]
        want = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(c.token_ids)[:, None])[
            :, 0
        ]
        d.append((torch.tensor(c.logprobs) - want).abs())
    d = torch.cat(d)
    assert d.max() < 3e-2 and d.median() < 1e-4, (d.max(), d.median())
