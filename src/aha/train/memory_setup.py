"""The memory plan at the start of training: read the model's config (AutoConfig, no weights), the device's free
memory and the run's settings; set the keys the config left null; print the breakdown; or stop with one line,
before any weight is loaded, when the run cannot fit. The arithmetic is in aha.train.memory.

On a GPU the plan runs unless memory.plan=off; on the CPU only when memory.max_memory_gib is set (host RAM is
rarely what limits a CPU run, and the tiny CPU models fit anywhere). Without a plan the null keys take their
plain defaults: no checkpointing, no token budget, no engine release.

The free memory is read once, at start: runs that start together on one GPU all see it whole. When other
processes already hold some of it, the breakdown says how much; several runs on one GPU should each be given
memory.max_memory_gib (an OOM later stops a run cleanly all the same: train/oom.py).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..config import ConfigError
from .memory import GIB, ModelShape, RunSpec
from .memory_plan import HEADROOM, Plan, make_plan

DENSE = ("qwen2", "qwen3", "llama", "mistral")  # closed-form parameter count (shape_from_config)
# Below this, what the GPU shows in use beyond this process's torch allocations is taken for its own CUDA
# context (about 0.5 GiB on an H200), not for another process.
OTHERS_MIN = GIB


def shape_from_config(config) -> ModelShape:
    """A Hugging Face causal-LM config -> ModelShape. Dense Qwen2/Qwen3/Llama/Mistral are counted in closed form
    (tests check it against instantiated models); other architectures by building the model on the meta device
    (no memory), their activations then estimated as for a Llama layer."""
    c = config
    H, L, nh = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or nh
    d = getattr(c, "head_dim", None) or H // nh
    I, V = c.intermediate_size, c.vocab_size
    tied = bool(getattr(c, "tie_word_embeddings", False))
    mt = getattr(c, "model_type", "")
    qk_norm = mt == "qwen3"
    if mt in DENSE:
        Q, KV = nh * d, kv * d
        bias = getattr(c, "attention_bias", False)
        qkv_bias = (Q + 2 * KV) if (mt == "qwen2" or bias) else 0
        o_bias = H if (bias and mt != "qwen2") else 0
        mlp_bias = (2 * I + H) if getattr(c, "mlp_bias", False) else 0
        layer = 2 * H * Q + 2 * H * KV + qkv_bias + o_bias + 3 * H * I + mlp_bias + 2 * H
        layer += 2 * d if qk_norm else 0
        params = V * H * (1 if tied else 2) + L * layer + H
    else:
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            params = sum(p.numel() for p in AutoModelForCausalLM.from_config(c).parameters())
    return ModelShape(H, L, nh, kv, d, I, V, params, tied=tied, qk_norm=qk_norm)


def model_shape(path: str, trust_remote_code: bool = False) -> ModelShape:
    """The shape of model.path (a built-in name, a local directory or a hub id: config.json only)."""
    from ..models.load import load_config

    if path == "tiny-random":
        from ..models.tiny import char_tokenizer, tiny_model

        return shape_from_config(tiny_model(len(char_tokenizer())).config)
    config = load_config(path, trust_remote_code)  # a .gguf file too
    return shape_from_config(getattr(config, "text_config", None) or config)


def device_limit(device: torch.device, max_memory_gib: float | None) -> tuple[int | None, str]:
    """(bytes the plan may use, where that number comes from); None: no plan (the CPU without a limit)."""
    asked = None if max_memory_gib is None else int(max_memory_gib * GIB)
    if device.type != "cuda":
        return asked, "memory.max_memory_gib"
    from ..rollout.fast.engine import free_gpu_bytes

    free = free_gpu_bytes(device)
    if asked is not None and asked <= free:
        return asked, "memory.max_memory_gib"
    return free, f"free on {torch.cuda.get_device_name(device)}"


def cap_memory(device: torch.device, max_memory_gib: float | None) -> float | None:
    """memory.max_memory_gib as a hard cap on a GPU: torch's allocator in this process raises OutOfMemoryError
    past it (the run's one line, its last step saved, exit 75), so a run that outgrows its share stops itself
    instead of a neighbour on the same GPU. -> the fraction of the device set, None where nothing is capped.
    The trainer lifts it when it closes (uncap_memory): the next stage of a pipeline sets its own."""
    if device.type != "cuda" or max_memory_gib is None:
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, max_memory_gib * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, _indexed(device))
    return fraction


def uncap_memory(device: torch.device) -> None:
    """Lift cap_memory's cap (the whole device again)."""
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0, _indexed(device))


def _indexed(device: torch.device) -> torch.device:
    """cuda -> cuda:N (the current device): set_per_process_memory_fraction refuses a device without index."""
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def held_by_others(device: torch.device) -> int:
    """Bytes of the GPU that other processes hold now: total - free - what this process's torch has reserved
    (0 on the CPU, and below OTHERS_MIN)."""
    if device.type != "cuda":
        return 0
    free, total = torch.cuda.mem_get_info(device)
    held = total - free - torch.cuda.memory_reserved(device)
    return held if held >= OTHERS_MIN else 0


def run_spec(
    cfg,
    world: int,
    dtype_bytes: int,
    critic: ModelShape | None,
    fused_head: bool = False,
    packed: bool = False,
) -> RunSpec:
    from ..models.load import elementwise_recompute

    m, a, s, b = cfg.model, cfg.algorithm, cfg.sampling, cfg.batch
    kl_copy = (a.beta > 0 or getattr(a, "reward_kl_coef", 0) > 0) and m.lora.r == 0
    return RunSpec(
        dtype_bytes=dtype_bytes,
        lora_r=m.lora.r,
        lora_targets=tuple(m.lora.target_modules),
        reference=kl_copy,
        critic=critic,
        optim=cfg.optim.name,
        sequences=max(1, b.prompts_per_step // world) * s.group_size,
        group_size=s.group_size,
        prompt_tokens=cfg.memory.prompt_tokens,
        new_tokens=s.max_new_tokens,
        micro_batch_size=b.micro_batch_size,
        share_prefix=b.share_prefix,
        kv_cache_dtype=cfg.kv_cache_dtype,
        world=world,
        fused_head=fused_head,
        packed=packed,
        fp8_weights=cfg.engine_weights_dtype == "fp8",
        compiled=bool(m.compile),
        recompute=elementwise_recompute(),
    )


def plan_memory(cfg, world: int = 1, device: torch.device | None = None, echo=print) -> Plan | None:
    """Resolve cfg's null memory keys in place (the trainer calls this before loading the model). Returns the
    plan, or None where none runs. Raises ConfigError (one line) when the run cannot fit."""
    from ..models.load import resolve_device

    if cfg.optim.name == "adamw_cpu_offload" and world > 1:
        raise ConfigError(
            "optim.name",
            "adamw_cpu_offload runs in one process; use adamw_8bit (or adamw) under torchrun",
        )
    device = device or resolve_device(cfg.model.device)
    limit, source = device_limit(device, cfg.memory.max_memory_gib)
    plan = None
    if cfg.memory.plan == "auto" and limit is not None:
        try:
            shape = model_shape(cfg.model.path, cfg.model.trust_remote_code)
        except (OSError, ValueError, AttributeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            echo(
                f"memory plan skipped: cannot read the shape of model '{cfg.model.path}' ({first})"
            )
        else:
            plan = _plan(cfg, shape, world, device, limit, source, echo)
    m, b = cfg.model, cfg.batch
    if plan is None:
        m.gradient_checkpointing = bool(m.gradient_checkpointing)
        b.micro_batch_tokens = b.micro_batch_tokens or 0
        cfg.engine_release = bool(cfg.engine_release)
        return None
    m.gradient_checkpointing = plan.checkpointing
    b.micro_batch_tokens = (
        b.micro_batch_tokens if b.micro_batch_tokens is not None else plan.micro_batch_tokens
    )
    cfg.engine_release = plan.engine_release
    return plan


def _plan(cfg, shape, world, device, limit, source, echo) -> Plan:
    from ..models.load import resolve_dtype

    b = torch.empty((), dtype=resolve_dtype(cfg.model.dtype, device)).element_size()
    critic = None
    if cfg.algorithm.name == "ppo":
        path = getattr(cfg.algorithm, "value_model_path", None)
        critic = model_shape(path, cfg.model.trust_remote_code) if path else shape
        critic = replace(
            critic, params=critic.params - (0 if critic.tied else critic.vocab * critic.hidden)
        )
    from ..algos.logprobs import fused_on

    # the lm head the update will run (the fused one's block is smaller); FastEngine packs weights on a GPU
    packed = device is not None and device.type == "cuda" and cfg.engine != "hf"
    run = run_spec(cfg, world, b, critic, fused_head=fused_on(device), packed=packed)
    plan = make_plan(
        shape,
        run,
        limit,
        checkpointing=cfg.model.gradient_checkpointing,
        micro_batch_tokens=cfg.batch.micro_batch_tokens,
        engine_release=cfg.engine_release,
    )
    others = held_by_others(device)
    if not plan.fits:
        held = f"; other processes hold {others / GIB:.1f} GiB" if others else ""
        raise ConfigError("memory", _does_not_fit(cfg, plan, run, source + held))
    echo(table(plan, run, shape, source, others))
    return plan


def _does_not_fit(cfg, plan: Plan, run: RunSpec, source: str) -> str:
    least = plan.minimum
    parts = [
        ("weights", least.weights),
        ("fp32 master", least.master),
        ("optimizer", least.optimizer),
        ("gradients", least.gradients),
        ("reference", least.reference),
        ("critic", least.critic),
        ("engine", least.kv_cache + least.engine),
        ("packed weights", least.packed),
        ("activations", least.activations),
    ]
    what = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts if v)
    keys = []
    if cfg.model.lora.r == 0:
        if run.optim == "adamw":
            keys.append("optim.name=adamw_8bit (or adamw_cpu_offload)")
        keys.append("model.lora.r=16")
    if run.reference:
        keys.append("algorithm.beta=0")
    if cfg.model.gradient_checkpointing is False:
        keys.append("model.gradient_checkpointing=true")
    if cfg.engine_release is False:
        keys.append("engine_release=true")
    if cfg.batch.micro_batch_tokens is not None:
        keys.append("batch.micro_batch_tokens=null (the plan's budget)")
    keys += ["sampling.max_new_tokens", "batch.prompts_per_step"]
    if source.startswith("memory.max_memory_gib"):
        keys.append("memory.max_memory_gib")
    return (
        f"this run needs at least {least.total / GIB:.1f} GiB ({what}) but the plan may use "
        f"{HEADROOM * plan.limit / GIB:.1f} GiB ({HEADROOM:.0%} of {plan.limit / GIB:.1f} GiB, {source}); "
        "lower it with " + ", ".join(keys)
    )


def table(plan: Plan, run: RunSpec, shape: ModelShape, source: str, others: int = 0) -> str:
    """The short breakdown printed at start; `others`: bytes other processes held on the GPU at start."""
    bd, g = plan.breakdown, lambda x: f"{x / GIB:8.2f}" if x else "       -"
    kv_tok = shape.kv_bytes_per_token(run.dtype_bytes, run.kv_cache_dtype)
    opt = {
        "adamw": "fp32 moments",
        "adamw_8bit": "8-bit moments",
        "adamw_cpu_offload": "in host memory",
    }
    rows = [
        ("weights", bd.weights, f"{shape.params / 1e9:.2f}B parameters, {run.dtype_bytes} B each"),
        ("fp32 master", bd.master, ""),
        ("optimizer", bd.optimizer, f"{run.optim} ({opt[run.optim]})"),
        ("gradients", bd.gradients, ""),
        ("reference", bd.reference, "frozen copy for the KL term" if bd.reference else ""),
        ("critic", bd.critic, "PPO value model: weights, gradients, AdamW" if bd.critic else ""),
        (
            "engine KV cache",
            bd.kv_cache,
            f"{run.sequences} sequences x {run.seq_tokens:,} tokens x {kv_tok / 1024:.1f} KiB",
        ),
        ("engine workspace", bd.engine, ""),
        (
            "packed weights",
            bd.packed,
            (
                "the engine's e4m3 decode weights"
                if run.fp8_weights
                else "the engine's q/k/v and gate/up in one GEMM each"
            )
            if bd.packed
            else "",
        ),
        (
            "activations",
            bd.activations,
            f"{plan.micro_batch_tokens:,} tokens per micro-batch, checkpointing "
            + ("on" if plan.checkpointing else "off"),
        ),
    ]
    lines = [
        f"memory plan: {bd.total / GIB:.1f} of {plan.limit / GIB:.1f} GiB ({source}; "
        f"kept under {HEADROOM:.0%})"
        + (f"; host memory {bd.host / GIB:.1f} GiB" if bd.host else "")
    ]
    lines += [f"  {k:<17}{g(v)}  {note}".rstrip() for k, v, note in rows]
    if others:
        lines.append(
            f"  {'other processes':<17}{g(others)}  held on this GPU at start; several runs on one GPU: "
            "give each memory.max_memory_gib"
        )
    lines.append(
        f"  chosen: model.gradient_checkpointing={str(plan.checkpointing).lower()} "
        f"batch.micro_batch_tokens={plan.micro_batch_tokens} "
        f"engine_release={str(plan.engine_release).lower()}"
    )
    return "\n".join(lines)


def memory_metrics(plan: Plan | None, device: torch.device) -> dict[str, float]:
    """memory/* for a step's metrics: the plan's estimate and, on a GPU, the measured peaks since the last call:
    what torch's tensors held (peak_gib) and what its caching allocator reserved from the driver for them
    (reserved_peak_gib: with fragmentation, closer to what the device must have)."""
    out = plan.breakdown.metrics() if plan is not None else {}
    if plan is not None:
        out["memory/limit_gib"] = plan.limit / GIB
    if device.type == "cuda":
        out["memory/peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        out["memory/reserved_peak_gib"] = torch.cuda.max_memory_reserved(device) / GIB
        torch.cuda.reset_peak_memory_stats(device)
    return out


def size_engine(engine, plan: Plan | None) -> None:
    """Give the fast engine the KV-cache bytes the plan left it (it takes what a step needs, up to that) and
    say whether it packs weights (only where the plan counted them)."""
    if plan is not None and hasattr(engine, "kv_cache_bytes"):
        engine.kv_cache_bytes = max(0, plan.kv_cache_bytes)
        engine.pack_weights = plan.breakdown.packed > 0
