"""Pick the engine for a model: the fast engine on a GPU, HF generate otherwise (or as asked)."""

from __future__ import annotations

from .hf import HFEngine

ENGINES = ("auto", "hf", "fast")


def make_engine(
    kind: str,
    model,
    tokenizer,
    kv_cache_dtype: str = "auto",
    weights_dtype: str = "auto",
    **fast_kw,
):
    """kind: auto (fast engine when the model is on a GPU), hf, or fast. kv_cache_dtype and weights_dtype
    (auto, fp8) and fast_kw go to FastEngine only (kv_cache_bytes / kv_cache_fraction from a memory plan,
    max_num_seqs, sync_every, ...); fp8 asked of HF generate is an error, not a silent bf16 run."""
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; choose one of: {', '.join(ENGINES)}")
    on_gpu = next(model.parameters()).is_cuda
    if check_fast_settings(kind, on_gpu, kv_cache_dtype, weights_dtype):
        from .fast import FastEngine  # pure torch (+ Triton when it imports): always importable

        return FastEngine(
            model, tokenizer, kv_cache_dtype=kv_cache_dtype, weights_dtype=weights_dtype, **fast_kw
        )
    return HFEngine(model, tokenizer)


def check_fast_settings(
    kind: str, on_gpu: bool, kv_cache_dtype: str, weights_dtype: str = "auto", prefix: str = ""
) -> bool:
    """Whether `kind` on this device is the fast engine; a ConfigError (one line in the CLI) when it is HF
    generate and kv_cache_dtype or weights_dtype asks for what only the fast engine has (`prefix`: the
    config's name for weights_dtype, engine_ in a training config). A trainer calls it before loading the
    model, make_engine again after."""
    fast = kind == "fast" or (kind == "auto" and on_gpu)
    for key, value in (
        ("kv_cache_dtype", kv_cache_dtype),
        (prefix + "weights_dtype", weights_dtype),
    ):
        if not fast and value != "auto":
            from ..config import ConfigError

            why = "engine=hf" if kind == "hf" else "engine=auto on the CPU"
            raise ConfigError(
                key,
                f"{value} is a fast-engine setting, but {why} generates with HF generate: set "
                f"engine=fast or {key}=auto (FastEngine runs on the CPU too)",
            )
    return fast
