"""The memory plan's arithmetic against hand-computed values (tiny configs and the Qwen2.5 0.5B-7B shapes, no
download) and against what autograd really keeps (saved-tensor hooks on tiny HF models); the plan's choices;
the CPU no-op; the one-line error through the CLI before any weight is loaded; a step run under a plan."""

from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig, Qwen2Config, Qwen3Config

from aha.train.memory import (
    GIB,
    ModelShape,
    RunSpec,
    activation_bytes,
    engine_parts,
    saved_bytes_per_token,
    static_parts,
)
from aha.train.memory_plan import EFFICIENT_TOKENS, HEADROOM, _efficient, make_plan
from aha.train.memory_setup import shape_from_config

QWEN25 = {  # config.json values of the public checkpoints, and their published parameter counts
    "0.5b": (dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True), 494_032_768),
    "1.5b": (dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                  intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True), 1_543_714_304),
    "3b": (dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True), 3_085_938_688),
    "7b": (dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False), 7_615_616_512),
}  # fmt: skip


def shape(size: str) -> ModelShape:
    return shape_from_config(Qwen2Config(**QWEN25[size][0]))


@pytest.mark.parametrize("size", list(QWEN25))
def test_parameter_counts_of_the_qwen25_shapes(size):
    assert shape(size).params == QWEN25[size][1]


@pytest.mark.parametrize(
    "cls,extra",
    [
        (Qwen2Config, {}),
        (Qwen2Config, {"tie_word_embeddings": False}),
        (LlamaConfig, {"attention_bias": True, "mlp_bias": True}),
        (LlamaConfig, {"tie_word_embeddings": False}),
        (Qwen3Config, {"head_dim": 24}),  # head_dim * heads != hidden
    ],
)
def test_closed_form_equals_the_instantiated_model(cls, extra):
    from transformers import AutoModelForCausalLM

    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, vocab_size=101, tie_word_embeddings=True)  # fmt: skip
    config = cls(**{**kw, **extra})
    model = AutoModelForCausalLM.from_config(config)
    assert shape_from_config(config).params == sum(p.numel() for p in model.parameters())


def test_kv_cache_bytes_per_token_by_hand():
    # 2 (K and V) x layers x kv_heads x head_dim x 2 bytes
    assert shape("0.5b").kv_bytes_per_token(2) == 2 * 24 * 2 * 64 * 2 == 12_288
    assert shape("1.5b").kv_bytes_per_token(2) == 2 * 28 * 2 * 128 * 2 == 28_672
    assert shape("7b").kv_bytes_per_token(2) == 2 * 28 * 4 * 128 * 2 == 57_344


@pytest.mark.parametrize("name", ["0.5b", "7b"])
def test_kv_bytes_per_token_is_the_engines(name):
    """The plan (no torch import) and the engine's cache (aha.rollout.fast.kv_cache) size a token alike."""
    from aha.rollout.fast.kv_cache import kv_bytes_per_token

    config = Qwen2Config(**QWEN25[name][0])
    for dtype, b in ((torch.bfloat16, 2), (torch.float32, 4)):
        for kv in ("auto", "fp8"):
            assert shape(name).kv_bytes_per_token(b, kv) == kv_bytes_per_token(config, dtype, kv)


def test_static_parts_by_hand_for_7b():
    P, s = 7_615_616_512, shape("7b")
    full = static_parts(s, RunSpec(reference=True))  # bf16, AdamWMaster, beta > 0
    assert (full.weights, full.master, full.optimizer, full.gradients, full.reference) == (
        2 * P, 4 * P, 8 * P, 2 * P, 2 * P,
    )  # fmt: skip
    assert (
        full.static == 18 * P and full.static / GIB > 127
    )  # does not fit one H200 with anything else
    eight = static_parts(s, RunSpec(reference=True, optim="adamw_8bit"))
    assert (eight.master, eight.optimizer, eight.static) == (0, 2 * P, 8 * P)
    off = static_parts(s, RunSpec(reference=True, optim="adamw_cpu_offload"))
    assert (off.master, off.optimizer, off.static, off.host) == (0, 0, 6 * P, 12 * P)
    # LoRA r=16 on q, k, v, o: 28 layers x 16 x ((3584+3584) + 2 (3584+512) + (3584+3584)) adapters in fp32
    lora_p = 28 * 16 * (7168 + 2 * 4096 + 7168)
    assert s.lora_params(16, ("q_proj", "k_proj", "v_proj", "o_proj")) == lora_p == 10_092_544
    lora = static_parts(s, RunSpec(lora_r=16, reference=False))
    assert (lora.weights, lora.master, lora.optimizer, lora.gradients) == (
        2 * P + 4 * lora_p, 0, 8 * lora_p, 4 * lora_p,
    )  # fmt: skip
    fsdp = static_parts(s, RunSpec(world=4))
    assert fsdp.weights == 2 * P // 4 and fsdp.master == 4 * P // 4
    critic = static_parts(s, RunSpec(critic=s))  # PPO: the critic's weights, grads, master, moments
    assert critic.critic == 16 * P


def test_qwen25_05b_and_15b_by_hand():
    # full fine-tuning, bf16, AdamWMaster: weights 2 + master 4 + moments 8 + grads 2 = 16 B/param
    for size in ("0.5b", "1.5b"):
        assert static_parts(shape(size), RunSpec()).static == 16 * QWEN25[size][1]
    # 0.5B, per token of a micro-batch, no checkpointing (H 896, 14 heads of 64, 2 KV heads, I 4864, 24 layers)
    layer = 2 * (4 * 896 + 4 + 4 * 896) + 2 * (2 * 896 + 2 * 128) + 4 * 14 + 8 * 4864
    assert layer == 57_408
    outside = 8 + (4 * 896 + 4 + 4 * 896) + 2 * 896 + 16 + 64
    assert (
        saved_bytes_per_token(shape("0.5b"), RunSpec(share_prefix=False), False)
        == 24 * layer + outside
    )
    assert (
        24 * layer + outside == 1_386_844
    )  # 1.3 MiB a token: 16k tokens need 21 GiB without checkpointing
    assert (
        saved_bytes_per_token(shape("0.5b"), RunSpec(share_prefix=False), True)
        == 24 * 2 * 896 + outside
    )


def test_activation_formula_by_hand():
    # H=64, 2 layers, 4 heads of 16, 2 KV heads, I=176, V=300, bf16, no sharing
    s = ModelShape(64, 2, 4, 2, 16, 176, 300, params=0)
    run = RunSpec(share_prefix=False)
    layer = 2 * (4 * 64 + 4 + 4 * 64) + 2 * (2 * 64 + 2 * 32) + 4 * 4 + 8 * 176  # = 2840
    outside = 8 + (4 * 64 + 4 + 4 * 64) + 2 * 64 + 16 + 64
    assert saved_bytes_per_token(s, run, False) == 2 * layer + outside == 6412
    assert saved_bytes_per_token(s, run, True) == 2 * 2 * 64 + outside
    n = 100
    grads = 3 * 2 * 176 + 8 * 64 + 12 * 64
    head = n * 300 * 14 + 4 * 300 * 64
    assert activation_bytes(s, run, n, False) == n * (6412 + grads) + head
    assert activation_bytes(s, run, n, True) == n * (256 + outside + layer + grads) + head
    # the fused lm head (CUDA): its (chunk, V) block in bf16 and the (V, H) product of the backward
    fused = replace(run, fused_head=True)
    head_fused = n * 300 * 2 + 2 * 300 * 64 + 4 * 300 * 64
    assert activation_bytes(s, fused, n, False) == n * (6412 + grads) + head_fused


def test_packed_weights_by_hand_and_as_the_engine_packs_them():
    from aha.models.tiny import tiny_model
    from aha.rollout.fast.model_runner import ModelRunner
    from aha.train.memory import packed_bytes

    s, run = shape("0.5b"), RunSpec(packed=True)
    assert packed_bytes(s, run) == 24 * 2 * 896 * (896 + 2 * 128 + 2 * 4864) == 467_927_040
    assert packed_bytes(s, replace(run, packed=False)) == 0
    peft = pytest.importorskip("peft")
    model = tiny_model(family="qwen2")  # fp32, q/k/v biases
    c = model.config
    tiny = shape_from_config(c)
    biases = (
        c.num_hidden_layers
        * (c.num_attention_heads + 2 * c.num_key_value_heads)
        * tiny.head_dim
        * 4
    )
    assert (
        ModelRunner(model).pack()
        == packed_bytes(tiny, RunSpec(dtype_bytes=4, packed=True)) + biases
    )
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    run = RunSpec(dtype_bytes=4, packed=True, lora_r=4, lora_targets=("q_proj", "v_proj"))
    assert ModelRunner(lora).pack() == packed_bytes(tiny, run) > 0  # gate/up only


def test_fused_chunk_is_the_kernels():
    from aha.algos import logprobs_fused
    from aha.train import memory

    assert memory.FUSED_CHUNK == logprobs_fused.FUSED_CHUNK


def measured_saved_per_token(model, B=2, T=64):
    """Bytes autograd keeps per token for the training forward (distinct storages, parameters excluded)."""
    from aha.train.forward import LogprobModel

    ids = torch.randint(3, model.config.vocab_size, (B, T))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        LogprobModel(model)(ids, torch.ones_like(ids), with_entropy=True)
    return sum(seen.values()) / (B * T)


@pytest.mark.parametrize(
    "family,dtype,lora",
    [
        ("qwen2", torch.bfloat16, 0),
        ("llama", torch.bfloat16, 0),
        ("qwen3", torch.bfloat16, 0),
        ("qwen2", torch.float32, 0),
        ("qwen2", torch.bfloat16, 8),
    ],
)
def test_activation_formula_matches_what_autograd_keeps(family, dtype, lora):
    """(Under checkpointing the hooks cannot see what is kept: the layer inputs are held by the checkpoint's
    closure, b H per layer, counted in test_activation_formula_by_hand.)"""
    from aha.models.tiny import tiny_model

    torch.manual_seed(0)
    model = tiny_model(
        300, family=family, hidden_size=64, num_layers=3, intermediate_size=176, dtype=dtype
    )
    targets = ("q_proj", "k_proj", "v_proj", "o_proj")
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=lora, target_modules=list(targets), task_type="CAUSAL_LM")
        )
    model.train()
    run = RunSpec(dtype_bytes=dtype.itemsize, lora_r=lora, lora_targets=targets, share_prefix=False)
    s = shape_from_config(model.config)
    est, got = saved_bytes_per_token(s, run, False), measured_saved_per_token(model)
    # RoPE's cos/sin tables (per position, not per token) are the only thing the estimate leaves out
    assert got == pytest.approx(est, rel=0.03), (got, est)


def test_compiled_activation_formula_matches_what_autograd_keeps():
    """model.compile=true (regional torch.compile of every decoder layer): Inductor keeps less than eager, and
    the compiled formula counts what it keeps."""
    from aha.models.load import compile_decoder_layers
    from aha.models.tiny import tiny_model

    torch.manual_seed(0)
    model = tiny_model(
        300, hidden_size=64, num_layers=3, intermediate_size=176, dtype=torch.bfloat16
    )
    model.train()
    s = shape_from_config(model.config)
    eager = measured_saved_per_token(model)
    compile_decoder_layers(model)
    measured_saved_per_token(model)  # compiles (the first call of a shape)
    got = measured_saved_per_token(model)
    run = RunSpec(dtype_bytes=2, share_prefix=False, compiled=True)
    est = saved_bytes_per_token(s, run, False)
    assert got < 0.8 * eager, (got, eager)
    assert got == pytest.approx(est, rel=0.05), (got, est)
    # a torch without the partitioner's flags keeps Inductor's default set: counted larger, never smaller
    old = saved_bytes_per_token(s, replace(run, recompute=False), False)
    assert old > est and old - est == 3 * (
        2 * 2 * 64 + 2 * 176
    )  # 3 layers' normed outputs and SiLU product


def test_a_torch_without_the_partitioner_flags_compiles_with_its_defaults(monkeypatch):
    """A torch that lacks one of RECOMPUTE_ELEMENTWISE's flags: nothing is set (no AttributeError from torch's
    config), the layers still compile, and run_spec then counts Inductor's default saved set."""
    import torch._functorch.config as functorch_config

    from aha.models import load
    from aha.models.tiny import tiny_model

    monkeypatch.setattr(load, "RECOMPUTE_ELEMENTWISE", {"a_flag_this_torch_lacks": False})
    assert not load.elementwise_recompute()
    assert load.compile_decoder_layers(tiny_model(300, hidden_size=32, num_layers=2)) == 2
    assert not hasattr(functorch_config, "a_flag_this_torch_lacks")


def test_compiled_layers_recompute_no_matmul_or_attention():
    """The element-wise recomputation compile_decoder_layers turns on: Inductor's partitioner (the same
    min-cut, captured through aot_autograd) puts no forward matmul or attention into the backward, which holds
    two matmuls per projection (input and weight gradients) and one attention backward."""
    import collections

    from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    from aha.models.load import compile_decoder_layers
    from aha.models.tiny import tiny_model
    from aha.train.forward import LogprobModel

    graphs = {}

    def grab(name):
        def compiler(gm, _):
            graphs[name] = collections.Counter(
                str(n.target) for n in gm.graph.nodes if n.op == "call_function"
            )
            return make_boxed_func(gm.forward)

        return compiler

    torch.manual_seed(0)
    model = tiny_model(
        300, hidden_size=64, num_layers=2, intermediate_size=176, dtype=torch.bfloat16
    )
    compile_decoder_layers(model)  # sets the flags
    torch._dynamo.reset()
    backend = aot_autograd(
        fw_compiler=grab("fw"),
        bw_compiler=grab("bw"),
        partition_fn=min_cut_rematerialization_partition,
    )
    model.model.layers[0].compile(backend=backend, dynamic=True)
    ids = torch.randint(3, 300, (2, 32))
    LogprobModel(model)(ids, torch.ones_like(ids))[0].float().sum().backward()
    count = lambda g, word: sum(
        c for t, c in graphs[g].items() if word in t and "backward" not in t
    )
    mms = count("fw", "mm")  # mm and addmm
    assert mms == 7, graphs["fw"]  # q, k, v, o, gate, up, down
    assert count("bw", "mm") == 2 * mms, graphs["bw"]
    assert count("bw", "attention") == 0, graphs["bw"]
    assert sum(c for t, c in graphs["bw"].items() if "attention" in t and "backward" in t) == 1


# ---- the plan ------------------------------------------------------------------------------------------------
RUN = RunSpec(
    sequences=64, prompt_tokens=256, new_tokens=4096, micro_batch_size=8, share_prefix=False
)


def need(s, run, ckpt, release, tokens):
    """The total a layout needs, from the parts (each checked above)."""
    st = static_parts(s, run)
    kv, _, engine = engine_parts(s, run)
    act = activation_bytes(s, run, tokens, ckpt)
    return st.static + engine + (max(kv, act) if release else kv + act)


def limit_for(total):
    return int(total / HEADROOM) + 1


def test_plan_prefers_the_fastest_layout_that_fits():
    s = shape("1.5b")
    eff, eff_ckpt = _efficient(s, RUN, False), _efficient(s, RUN, True)
    a = need(s, RUN, False, False, eff)
    b = need(s, RUN, True, False, eff_ckpt)
    c = need(s, RUN, False, True, eff)
    assert b < a and c < a
    roomy = make_plan(s, RUN, 1000 * GIB)
    assert (roomy.checkpointing, roomy.engine_release) == (False, False)
    assert (
        roomy.micro_batch_tokens == RUN.micro_batch_size * RUN.seq_tokens
    )  # the whole micro-batch
    plan = make_plan(s, RUN, limit_for(a))
    assert (plan.checkpointing, plan.engine_release) == (
        False,
        False,
    ) and plan.micro_batch_tokens >= eff
    plan = make_plan(s, RUN, limit_for(b))  # (off, off) misses by the activations: checkpointing
    assert (plan.checkpointing, plan.engine_release) == (
        True,
        False,
    ) and plan.micro_batch_tokens >= eff_ckpt
    plan = make_plan(s, RUN, limit_for(a), checkpointing=True)  # the user's setting wins
    assert plan.checkpointing is True
    plan = make_plan(
        s, RUN, limit_for(c), checkpointing=False
    )  # user: no checkpointing -> release instead
    assert (plan.checkpointing, plan.engine_release) == (
        False,
        True,
    ) and plan.micro_batch_tokens >= eff
    if c < b:  # with both free, (off, on) is taken only where (on, off) does not fit
        plan = make_plan(s, RUN, limit_for(c))
        assert (plan.checkpointing, plan.engine_release) == (False, True)
    for lim in torch.linspace(5, 200, 40).tolist():  # whatever the limit, the chosen layout fits it
        plan = make_plan(s, RUN, int(lim * GIB))
        if plan.fits:
            assert plan.breakdown.total <= HEADROOM * lim * GIB
            assert plan.kv_cache_bytes >= plan.breakdown.kv_cache > 0


def test_plan_shrinks_the_kv_cache_last_and_reports_when_nothing_fits():
    s = shape("1.5b")
    one_seq = need(
        s, RUN, True, True, RUN.seq_tokens
    )  # release, checkpointing, one sequence per micro-batch
    plan = make_plan(s, RUN, limit_for(one_seq))
    assert plan.fits and plan.checkpointing and plan.engine_release
    st = static_parts(s, RUN)
    _, kv_one, engine = engine_parts(s, RUN)
    tiny = st.static + engine + max(kv_one, activation_bytes(s, RUN, RUN.seq_tokens, True))
    plan = make_plan(s, RUN, limit_for(tiny))  # a KV cache for fewer than all 64 sequences
    assert plan.fits and plan.breakdown.kv_cache < 64 * RUN.seq_tokens * s.kv_bytes_per_token(2)
    bad = make_plan(s, RUN, limit_for(tiny) - GIB)
    assert not bad.fits and bad.minimum.total > HEADROOM * (limit_for(tiny) - GIB)


def test_packed_weights_live_with_the_kv_cache_and_are_dropped_before_a_slower_layout():
    from aha.train.memory import Breakdown, packed_bytes

    bd = Breakdown(weights=10, kv_cache=5, engine=1, packed=7, activations=8)
    assert (
        bd.total == 10 + 5 + 1 + 7 + 8 == 31
    )  # the engine (KV cache, packed weights) kept for the update
    assert replace(bd, release=True).total == 10 + max(5 + 1 + 7, 8) == 23
    s, run = shape("0.5b"), replace(RUN, packed=True)
    assert make_plan(s, run, 100 * GIB).breakdown.packed == packed_bytes(s, run) > 0  # room: kept
    # 7B, a small fixed micro-batch: generation is the larger phase, so packing would cost KV cache
    s, run = shape("7b"), replace(RUN, packed=True)
    bare = replace(run, packed=False)
    st, (kv, _, engine) = static_parts(s, bare), engine_parts(s, bare)
    limit = limit_for(st.static + engine + kv + activation_bytes(s, bare, 256, False))
    plan = make_plan(s, run, limit, micro_batch_tokens=256)
    assert plan.fits and plan.breakdown.packed == 0 and plan.breakdown.kv_cache == kv
    assert not plan.checkpointing and not plan.engine_release
    # nothing fits: the error's minimum leaves the optional packed weights out
    bad = make_plan(s, run, limit // 4, micro_batch_tokens=256)
    assert not bad.fits and bad.minimum.packed == 0


def gpu_run(**kw) -> RunSpec:
    """A run as `aha train` plans it on a GPU: 64 sequences, 512 prompt tokens, the fused lm head, packing."""
    return RunSpec(sequences=64, prompt_tokens=512, fused_head=True, packed=True, **kw)


def test_packed_weights_beat_a_larger_micro_batch_once_both_are_efficient():
    """1.5B x 4,096 with an fp8 cache under 40 GiB (H200, docs/results/scale_h200/s8): the packed engine leaves
    18,524-token micro-batches, the bare one 24,459. Both are past EFFICIENT_TOKENS, where packing (every decode
    step) outweighs the micro-batch: generation 12.65 s against 13.50, the step 20.15 s against 20.86 (the bare
    plan's figures from session 7, before the fused split merge's ~0.2 s)."""
    from aha.train.memory_plan import EFFICIENT_TOKENS

    s = shape("1.5b")
    run = gpu_run(new_tokens=4096, micro_batch_size=8, kv_cache_dtype="fp8")
    plan = make_plan(s, run, 40 * GIB)
    bare = make_plan(s, replace(run, packed=False), 40 * GIB)
    assert plan.breakdown.packed > 0 and (plan.checkpointing, plan.engine_release) == (True, False)
    assert EFFICIENT_TOKENS <= plan.micro_batch_tokens < bare.micro_batch_tokens
    assert plan.breakdown.kv_cache == bare.breakdown.kv_cache


def test_an_efficient_micro_batch_outranks_the_packed_weights():
    """0.5B x 8,192 new tokens, 4 sequences a micro-batch, 16 GiB: with the packed weights only a host-bound
    8,704-token micro-batch fits beside the kept KV cache; without them the released layout takes all 34,816.
    The plan's tiers come first (the micro-batch's host cost is per micro-batch and layer, the packing's gain
    per decode step is ~4%)."""
    plan = make_plan(shape("0.5b"), gpu_run(new_tokens=8192, micro_batch_size=4), 16 * GIB)
    assert (
        plan.breakdown.packed == 0 and plan.engine_release and plan.micro_batch_tokens == 4 * 8704
    )


def test_fixed_token_budget_is_kept_or_fails():
    s = shape("0.5b")
    plan = make_plan(s, RUN, 100 * GIB, micro_batch_tokens=8192)
    assert plan.fits and plan.micro_batch_tokens == 8192
    # 0 = no budget: whole micro-batches of 8 x 4,352 tokens, 49 GiB of activations without checkpointing
    assert not make_plan(s, RUN, 40 * GIB, micro_batch_tokens=0, checkpointing=False).fits
    assert make_plan(
        s, RUN, 40 * GIB, micro_batch_tokens=0
    ).checkpointing  # unless checkpointing is free


def test_below_efficient_micro_batches_the_largest_micro_batch_wins():
    """0.5B x 512 under 12 GiB on an H200 (the scale benchmark's case): no layout fits 16,384-token micro-batches,
    so the plan takes the one with the largest micro-batch, here the released KV cache, rather than the first
    that fits (checkpointing with the cache kept: 7,498 tokens, an update twice as slow on the GPU)."""
    s = shape("0.5b")
    run = RunSpec(
        sequences=64,
        new_tokens=512,
        micro_batch_size=16,
        share_prefix=False,
        fused_head=True,
        packed=True,
    )
    plan = make_plan(s, run, 12 * GIB)
    assert plan.fits and plan.checkpointing and plan.engine_release
    kept = make_plan(s, run, 12 * GIB, engine_release=False)  # what the first fitting layout gave
    assert kept.fits and kept.checkpointing
    assert run.seq_tokens <= kept.micro_batch_tokens < plan.micro_batch_tokens < EFFICIENT_TOKENS
    assert plan.breakdown.total <= HEADROOM * 12 * GIB
    # a budget the user fixed: every layout has the same micro-batch, so the order decides (kept first)
    fixed = make_plan(s, run, 12 * GIB, micro_batch_tokens=4096)
    assert fixed.fits and not fixed.engine_release


def test_compiled_15b_drops_checkpointing_for_one_sequence_micro_batches():
    """1.5B x 4,096 under 40 GiB with model.compile=true, fp8 cache and weights, the KV cache released (H200,
    docs/results/scale_h200/s14): one sequence a micro-batch keeps the GPU busy without checkpointing, so the plan
    takes that (update 6.35 s, peak 33.9 GiB; with the element-wise recomputation 6.15 s, 31.0 GiB, s15) over
    checkpointed 39,523-token micro-batches (6.74 s); eager layers' estimate does not fit it. The efficient sizes
    follow the layer's weights: 0.5B checkpointed ~16k."""
    s = shape("1.5b")
    run = gpu_run(
        new_tokens=4096, micro_batch_size=8, kv_cache_dtype="fp8", fp8_weights=True, compiled=True
    )
    plan = make_plan(s, run, 40 * GIB, engine_release=True)
    assert not plan.checkpointing and run.seq_tokens <= plan.micro_batch_tokens < 2 * run.seq_tokens
    assert plan.breakdown.total <= HEADROOM * 40 * GIB
    eager = make_plan(s, replace(run, compiled=False), 40 * GIB, engine_release=True)
    assert eager.checkpointing
    # left to choose, the plan releases the KV cache rather than checkpoint (release ~0.05 s, recompute ~0.4 s)
    free = make_plan(s, run, 40 * GIB)
    assert (free.checkpointing, free.engine_release) == (False, True)
    kept = make_plan(
        s, replace(run, compiled=False), 40 * GIB
    )  # eager: nothing fits unless checkpointed
    assert (kept.checkpointing, kept.engine_release) == (True, False)
    assert _efficient(s, run, False) == run.seq_tokens < _efficient(s, run, True)
    small = RunSpec(sequences=64, new_tokens=512, micro_batch_size=32)
    assert _efficient(shape("0.5b"), small, True) == pytest.approx(16384, rel=0.01)
    assert _efficient(shape("0.5b"), small, False) < 16384
