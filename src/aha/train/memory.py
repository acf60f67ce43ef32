"""The memory plan of an RL run on one GPU: every large allocation estimated from the model's config alone (no
weights loaded). Pure arithmetic: `memory_plan` chooses the settings that fit, `memory_setup` reads the model
config and the device and applies the plan at the start of training.

Bytes, for P parameters stored in b bytes (2 for bf16), P_t of them trained (all, or the LoRA adapters):
    weights      P * b  (+ 4 per LoRA parameter: PEFT keeps adapters in fp32)
    fp32 master  4 * P_t when the trained weights are bf16/fp16 and optim.name=adamw (AdamWMaster, train/optim.py)
    optimizer    adamw: 8 * P_t (exp_avg, exp_avg_sq in fp32); adamw_8bit: 2 * P_t (torchao, bf16 weights
                 rounded stochastically, no master); adamw_cpu_offload: 0 (master and moments in host memory)
    gradients    P_t * (the trained weights' element size); freed right after each optimizer step (not held
                 through the rollout), but counted throughout: they coexist with a KV cache kept for the update
    reference    P * b when the KL term needs a frozen copy (beta > 0 without LoRA; with LoRA the adapters are
                 switched off instead); PPO's critic: its decoder's weights, gradients and AdamW state
    engine       KV cache: 2 * layers * kv_heads * head_dim * b per token, for every sequence of the step
                 (prompt + max_new_tokens); plus the engine's sampling buffers and prefill workspace
    packed       on a GPU, FastEngine's copy of the q/k/v and gate/up weights (groups without adapters), kept
                 with the KV cache (freed for the update when the engine is released); with
                 engine_weights_dtype=fp8 instead its e4m3 copy of q/k/v, gate/up and down (1 byte per weight +
                 a 4-byte scale per output channel), on any device
    activations  per token of a micro-batch, what autograd keeps for the backward of a Hugging Face Qwen2 /
                 Llama layer under sdpa (counted with saved-tensor hooks, tests/test_memory.py):
                     2 RMSNorms 2 (4H + 4 + 2bH)   fp32 upcast, rsqrt, normalised input, scaled output
                     attention  b (2Q + 2KV) + 4 nh  q, k, v after RoPE, output, fp32 logsumexp (flash)
                     MLP        4 b I              gate, silu(gate), up, their product
                 (Q = heads * head_dim, KV = kv_heads * head_dim; Qwen3's q/k norms add theirs). Compiled
                 layers (model.compile=true, full fine-tuning, no q/k norms) keep less: Inductor recomputes
                 the element-wise work in the backward (aha.models.load.RECOMPUTE_ELEMENTWISE), so the two
                 RMSNorms keep their inputs and fp32 rsqrt, and the MLP keeps gate and up:
                     2 b H + 8 + b (2Q + 2KV) + 4 nh + 2 b I
                 (48 KiB a token at 1.5B against 101 eager; with Inductor's default bans, as on a torch
                 without those flags (RunSpec.recompute=False), it also keeps the normalised outputs and
                 SiLU(gate) * up: 4 b H + 8 + b (2Q + 2KV) + 4 nh + 3 b I, 72 KiB, and an H200 run measured
                 2.15 MB a token for 28 layers and the rest, docs/results/scale_h200/s14). Under LoRA the
                 frozen projections keep nothing and each adapter keeps an fp32 copy of its input. Gradient
                 checkpointing keeps b H per layer and recomputes one layer at a time. Plus the lm-head chunk
                 (1024 rows x vocab, fp32) of aha.algos.logprobs and one layer's gradient buffers.
Under FSDP (world > 1) the weights, gradients and optimizer state are split over the ranks; rollouts gather the
weights, so generation holds a full copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import check

GIB = 2**30
LOGIT_CHUNK = 1024  # rows per lm-head chunk (aha.algos.logprobs.token_logprobs_entropy's default)
FUSED_CHUNK = 2048  # the same on the fused path (aha.algos.logprobs_fused.FUSED_CHUNK; a test keeps them equal)
ENGINE_ROWS = 1024  # FastEngine's max_num_seqs: its output buffers have at least this many rows
PREFILL_TOKENS = 16384  # FastEngine's max_prefill_tokens
OPTIMIZERS = ("adamw", "adamw_8bit", "adamw_cpu_offload")


@dataclass
class MemoryConfig:
    """The `memory` section of a training config. The plan sets model.gradient_checkpointing,
    batch.micro_batch_tokens and engine_release where the config leaves them null, and sizes the engine's KV
    cache. On the CPU it runs only when max_memory_gib is given (host RAM is rarely what limits a CPU run)."""

    # auto: size micro-batches, checkpointing, KV cache to memory
    plan: Literal["auto", "off"] = "auto"
    # null: the GPU's free memory at start. On a GPU also a hard cap on this process's torch memory
    # (torch.cuda.set_per_process_memory_fraction): a run that outgrows it stops itself (exit 75), not a neighbour
    max_memory_gib: float | None = None
    # The longest prompt the estimate assumes (the token budget the plan sets bounds longer ones).
    prompt_tokens: int = 512

    def __post_init__(self):
        check(
            self.max_memory_gib is None or self.max_memory_gib > 0,
            "max_memory_gib",
            f"must be > 0 GiB (or null for the device's free memory), got {self.max_memory_gib}",
        )
        check(self.prompt_tokens >= 1, "prompt_tokens", f"must be >= 1, got {self.prompt_tokens}")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a dense decoder (Qwen2/2.5/3, Llama, Mistral) that the estimate needs."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    params: int  # all parameters
    tied: bool = True  # lm_head shares the embedding matrix
    qk_norm: bool = False  # Qwen3: RMSNorm on every query and key head

    def kv_bytes_per_token(self, b: int, kv_cache_dtype: str = "auto") -> int:
        """b: the model's element size; an fp8 cache takes 1 byte per element and a 4-byte scale per head."""
        if kv_cache_dtype == "fp8":
            return 2 * self.layers * self.kv_heads * (self.head_dim + 4)
        return 2 * self.layers * self.kv_heads * self.head_dim * b

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each projection of one layer, by the module names LoRA targets."""
        H, Q, KV, I = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        )
        return {
            "q_proj": (H, Q),
            "k_proj": (H, KV),
            "v_proj": (H, KV),
            "o_proj": (Q, H),
            "gate_proj": (H, I),
            "up_proj": (H, I),
            "down_proj": (I, H),
        }

    def lora_params(self, r: int, targets) -> int:
        dims = self.linears()
        return self.layers * sum(r * sum(dims[t]) for t in set(targets) if t in dims)


@dataclass(frozen=True)
class RunSpec:
    """What the run's settings say about memory (one process of `world`)."""

    dtype_bytes: int = 2
    lora_r: int = 0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    reference: bool = False  # a frozen full copy of the policy (KL term without LoRA)
    critic: ModelShape | None = None  # PPO's value model
    optim: str = "adamw"
    sequences: int = 64  # sequences generated per step by this process
    group_size: int = 8
    prompt_tokens: int = 512
    new_tokens: int = 256
    micro_batch_size: int = 16
    share_prefix: bool = True
    kv_cache_dtype: str = "auto"  # the fast engine's cache: the model's dtype, or fp8
    world: int = 1
    fused_head: bool = False  # the lm head runs through aha.algos.logprobs_fused (CUDA with triton)
    packed: bool = False  # FastEngine packs q/k/v and gate/up weights (its default on a GPU)
    fp8_weights: bool = False  # FastEngine decodes on e4m3 copies (engine_weights_dtype=fp8)
    # model.compile=true: the decoder layers run through torch.compile (Inductor)
    compiled: bool = False
    # ... and recompute element-wise work in the backward (aha.models.load.elementwise_recompute: this torch has
    # the partitioner's flags); False: Inductor's default saved set
    recompute: bool = True

    @property
    def seq_tokens(self) -> int:
        return self.prompt_tokens + self.new_tokens


@dataclass
class Breakdown:
    """Estimated bytes on the device (and in host memory, for the offloaded optimizer)."""

    weights: int = 0
    master: int = 0
    optimizer: int = 0
    gradients: int = 0
    reference: int = 0
    critic: int = 0
    kv_cache: int = 0
    engine: int = 0  # sampling buffers, prefill workspace, FSDP-gathered weights during rollouts
    packed: int = 0  # FastEngine's packed q/k/v and gate/up weights: kept with the KV cache
    activations: int = 0
    host: int = 0
    release: bool = False  # the KV cache is freed before the update: the two phases do not overlap

    @property
    def static(self) -> int:
        return (
            self.weights
            + self.master
            + self.optimizer
            + self.gradients
            + self.reference
            + self.critic
        )

    @property
    def total(self) -> int:
        """The larger of the two phases: generation (KV cache, engine buffers, packed weights) and the update
        (activations, and the engine's memory unless it is released)."""
        gen = self.kv_cache + self.engine + self.packed
        return self.static + (
            max(gen, self.activations) if self.release else gen + self.activations
        )

    def metrics(self) -> dict[str, float]:
        keys = ("weights", "master", "optimizer", "gradients", "reference", "critic", "kv_cache")
        out = {f"memory/{k}_gib": getattr(self, k) / GIB for k in keys}
        out.update(
            {
                "memory/engine_gib": self.engine / GIB,
                "memory/packed_gib": self.packed / GIB,
                "memory/activations_gib": self.activations / GIB,
                "memory/total_gib": self.total / GIB,
            }
        )
        if self.host:
            out["memory/host_gib"] = self.host / GIB
        return out


# ---- the parts ----------------------------------------------------------------------------------------------
def static_parts(shape: ModelShape, run: RunSpec) -> Breakdown:
    """Weights, master, optimizer state, gradients, reference and critic (per process)."""
    if run.optim not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {run.optim!r}; choose one of: {', '.join(OPTIMIZERS)}")
    b, P, W = run.dtype_bytes, shape.params, run.world
    lora = shape.lora_params(run.lora_r, run.lora_targets) if run.lora_r > 0 else 0
    trained = lora or P
    tb = 4 if lora else b  # element size of the trained weights (and of their gradients)
    master = 4 * trained if tb < 4 and run.optim == "adamw" else 0
    moments = {"adamw": 8, "adamw_8bit": 2, "adamw_cpu_offload": 0}[run.optim] * trained
    host = (8 + (4 if tb < 4 else 0)) * trained if run.optim == "adamw_cpu_offload" else 0
    critic = 0
    if run.critic is not None:  # its own AdamW (train/ppo.py), an fp32 master when bf16
        critic = run.critic.params * (2 * b + 8 + (4 if b < 4 else 0))
    return Breakdown(
        weights=(P * b + 4 * lora) // W,
        master=master // W,
        optimizer=moments // W,
        gradients=trained * tb // W,
        reference=(P * b if run.reference else 0) // W,
        critic=critic // W,
        host=host,
    )


def engine_parts(shape: ModelShape, run: RunSpec) -> tuple[int, int, int]:
    """(full KV cache, one sequence's KV cache, engine workspace) in bytes."""
    b, per_tok = run.dtype_bytes, shape.kv_bytes_per_token(run.dtype_bytes, run.kv_cache_dtype)
    kv_full = run.sequences * run.seq_tokens * per_tok
    kv_one = (run.seq_tokens + 16) * per_tok  # + a page
    rows = min(run.sequences, ENGINE_ROWS)
    out_rows = max(run.sequences, ENGINE_ROWS)
    sampling = rows * shape.vocab * (b + 8)  # logits, fp32 probabilities, sampler temporaries
    # out_tok (int64) and out_lp (fp32) rows of a power-of-two width
    buffers = out_rows * (1 << max(0, run.new_tokens).bit_length()) * 12
    prompts = max(1, run.sequences // max(1, run.group_size))
    prefill = min(PREFILL_TOKENS, prompts * run.prompt_tokens)
    prefill_ws = prefill * (3 * b * shape.intermediate + 6 * b * shape.hidden)
    gathered = shape.params * b * (run.world - 1) // run.world  # FSDP: rollouts on gathered weights
    return kv_full, kv_one, sampling + buffers + prefill_ws + gathered


def packed_bytes(shape: ModelShape, run: RunSpec) -> int:
    """FastEngine's packed weights (rollout/fast/model_runner.py): q/k/v and gate/up of every layer, for each
    group with no LoRA adapter on it (a group with one keeps the module calls). Whole under FSDP: rollouts
    run on the gathered weights. Biases (a few KiB) are left out. fp8 weights: the e4m3 copy, whatever packed
    says (it is not optional), with a 4-byte scale per output channel."""
    dims = shape.linears()
    if run.fp8_weights:
        names = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj")
        # (the lm head stays in the model dtype: rollout/fast/model_runner.py FP8_LM_HEAD)
        return shape.layers * sum(dims[t][0] * dims[t][1] + 4 * dims[t][1] for t in names)
    if not run.packed:
        return 0
    adapted = set(run.lora_targets) if run.lora_r > 0 else set()
    groups = [
        g
        for g in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
        if not adapted & set(g)
    ]
    return shape.layers * run.dtype_bytes * sum(dims[t][0] * dims[t][1] for g in groups for t in g)


def shares_prefix(prompt_tokens: int, seq_tokens: int, group_size: int) -> bool:
    """Whether aha.train.forward computes each prompt once, on the assumed lengths (one group of G rows)."""
    from .forward import worth_sharing

    return worth_sharing((group_size - 1) * prompt_tokens, group_size * seq_tokens)


def layer_bytes_per_token(shape: ModelShape, run: RunSpec) -> int:
    """What autograd keeps per token of one decoder layer, no checkpointing (module docstring)."""
    b, H, I, nh = run.dtype_bytes, shape.hidden, shape.intermediate, shape.heads
    Q, KV = nh * shape.head_dim, shape.kv_heads * shape.head_dim
    attn = b * (2 * Q + 2 * KV) + 4 * nh
    if run.lora_r > 0:
        # Frozen projections and norms keep no inputs; an adapter keeps an fp32 copy of its input and r outputs.
        dims = shape.linears()
        adapters = sum(4 * dims[t][0] + 4 * run.lora_r for t in set(run.lora_targets) if t in dims)
        qk = (4 * Q + 4 * nh + 4 * KV + 4 * shape.kv_heads) if shape.qk_norm else 0
        return 2 * (4 * H + 4) + attn + 3 * b * I + adapters + qk
    if run.compiled and not shape.qk_norm:  # Inductor's saved set (module docstring)
        # without the recompute flags, Inductor's default bans keep the normed outputs and SiLU(gate) * up too
        if not run.recompute:
            return 4 * b * H + 8 + attn + 3 * b * I
        return 2 * b * H + 8 + attn + 2 * b * I
    qk = (4 * Q + 4 * nh + b * Q + 4 * KV + 4 * shape.kv_heads + b * KV) * shape.qk_norm
    return 2 * (4 * H + 4 + 2 * b * H) + attn + 4 * b * I + qk


def saved_bytes_per_token(shape: ModelShape, run: RunSpec, checkpointing: bool) -> int:
    """Everything autograd keeps per token of a micro-batch until the backward reaches it."""
    b, H = run.dtype_bytes, shape.hidden
    layer = b * H if checkpointing else layer_bytes_per_token(shape, run)
    shared = run.share_prefix and shares_prefix(run.prompt_tokens, run.seq_tokens, run.group_size)
    if shared and not checkpointing:  # K/V repeated to every head, a (C, P+C) mask per row
        layer += b * 2 * (shape.heads - shape.kv_heads) * shape.head_dim + b * run.seq_tokens
    # Final norm, the lm head's input copy, targets/logsumexp/entropy, the loss's per-token tensors; full
    # fine-tuning also keeps the embedding's indices and the final norm's normalised input.
    if run.lora_r > 0:
        outside = (4 * H + 4) + b * H + 16 + 64
    else:
        outside = 8 + (4 * H + 4 + 2 * b * H) + b * H + 16 + 64
    return shape.layers * layer + outside


def activation_bytes(shape: ModelShape, run: RunSpec, tokens: int, checkpointing: bool) -> int:
    """Peak bytes of the training forward + backward of one micro-batch of `tokens` (padded) tokens: what is
    saved, one layer rebuilt (checkpointing), one layer's gradient buffers, the lm head's (chunk, V) block."""
    b, H, I, V = run.dtype_bytes, shape.hidden, shape.intermediate, shape.vocab
    recompute = layer_bytes_per_token(shape, run) if checkpointing else 0
    grads = 3 * b * I + 4 * b * H + 12 * H  # (fp32 buffers in the RMSNorm's backward)
    # the lm head's (chunk, V) block: logits in b bytes, an fp32 copy, the softmax, logsumexp's temporary;
    # fused: the block in b bytes (its gradient is written over it) and the (V, H) product of the backward
    if run.fused_head:
        head = min(FUSED_CHUNK, tokens) * V * b + b * V * H
    else:
        head = min(LOGIT_CHUNK, tokens) * V * (b + 12)
    head_grad = 0 if run.lora_r > 0 else 4 * V * H  # the lm-head gradient, accumulated in fp32
    per_token = saved_bytes_per_token(shape, run, checkpointing) + recompute + grads
    return tokens * per_token + head + head_grad
