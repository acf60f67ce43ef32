"""Pick the engine for a model: the fast engine on a GPU, HF generate otherwise (or as asked)."""

from __future__ import annotations

import warnings

from .hf import HFEngine

ENGINES = ("auto", "hf", "fast")


def make_engine(kind: str, model, tokenizer, **fast_kw):
    """kind: auto (fast engine when the model is on a GPU), hf, or fast. fast_kw go to FastEngine only
    (kv_cache_bytes / kv_cache_fraction from a memory plan, max_num_seqs, sync_every, ...)."""
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; choose one of: {', '.join(ENGINES)}")
    on_gpu = next(model.parameters()).is_cuda
    if kind == "fast" or (kind == "auto" and on_gpu):
        try:
            from .fast import FastEngine
        except ImportError as e:
            if kind == "fast":
                raise ValueError(f"engine=fast is not available ({e}); use engine=hf") from None
            warnings.warn(f"fast engine unavailable ({e}); using HF generate", stacklevel=2)
        else:
            return FastEngine(model, tokenizer, **fast_kw)
    return HFEngine(model, tokenizer)
