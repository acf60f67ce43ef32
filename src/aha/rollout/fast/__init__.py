"""FastEngine: continuous batching over a paged KV cache on the live model parameters (see engine.py)."""

from .engine import FastEngine

__all__ = ["FastEngine"]
