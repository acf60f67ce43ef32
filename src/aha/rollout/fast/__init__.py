"""FastEngine: continuous batching over a paged KV cache on the live model parameters (see engine.py).

`kv_bytes_per_token(model_or_config)` gives the cache's cost of one token, for memory plans."""

from .engine import FastEngine
from .kv_cache import kv_bytes_per_token

__all__ = ["FastEngine", "kv_bytes_per_token"]
