"""The paged KV cache: a pool of fixed-size pages shared by all sequences, and the host-side page allocator.

Layout per layer: k[l], v[l] of shape (num_pages * page_size, KVH, D), so a cache position is one flat slot
index (page * page_size + offset) and prefill/decode write with one index_copy. Page 0 is never handed out:
finished sequences that still run in a CUDA-graph batch write their (ignored) K/V there.

A prompt's full pages are shared by its n samples (refcounted); the partly filled last page is copied to
each sample's first private page, so samples never write into a shared page.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        num_pages: int,
        page_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        if num_pages < 2:
            raise ValueError(
                f"KV cache needs at least 2 pages, got {num_pages}; raise the memory budget"
            )
        self.num_pages, self.page_size = num_pages, page_size
        shape = (num_layers, num_pages * page_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    @staticmethod
    def bytes_per_page(num_layers, page_size, num_kv_heads, head_dim, dtype) -> int:
        return (
            2
            * num_layers
            * page_size
            * num_kv_heads
            * head_dim
            * torch.empty((), dtype=dtype).element_size()
        )

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def copy_page(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy whole pages src[i] -> dst[i] in every layer (src, dst: int64 page ids on the cache device)."""
        off = torch.arange(self.page_size, device=src.device)
        s = (src[:, None] * self.page_size + off).reshape(-1)
        d = (dst[:, None] * self.page_size + off).reshape(-1)
        self.k[:, d] = self.k[:, s]
        self.v[:, d] = self.v[:, s]


class PageAllocator:
    """Free list + reference counts of the cache pages (host side; page 0 reserved as the trash page)."""

    def __init__(self, num_pages: int):
        self.free_pages = list(range(num_pages - 1, 0, -1))  # pop() hands out low ids first
        self.refs = [0] * num_pages
        self.capacity = num_pages - 1

    @property
    def num_free(self) -> int:
        return len(self.free_pages)

    def alloc(self, n: int) -> list[int]:
        if n > len(self.free_pages):
            raise RuntimeError(f"page allocator: asked for {n} pages, {len(self.free_pages)} free")
        out = [self.free_pages.pop() for _ in range(n)]
        for p in out:
            self.refs[p] = 1
        return out

    def share(self, pages: list[int], times: int) -> None:
        for p in pages:
            self.refs[p] += times

    def release(self, pages: list[int]) -> None:
        for p in pages:
            self.refs[p] -= 1
            if self.refs[p] == 0:
                self.free_pages.append(p)


def kv_bytes_per_token(model_or_config, dtype: torch.dtype | None = None) -> int:
    """Bytes one token's K and V take in FastEngine's cache: 2 x layers x KV heads x head dim x element size.

    Takes a model (dtype from its parameters) or an HF config (dtype from `dtype`/`torch_dtype`, else the
    argument), so a memory plan can size `kv_cache_bytes` before loading weights. The cache holds
    kv_cache_bytes // (page_size * this) pages of page_size tokens, one of them reserved."""
    cfg = getattr(model_or_config, "config", model_or_config)
    if hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    if dtype is None and hasattr(model_or_config, "parameters"):
        dtype = next(model_or_config.parameters()).dtype
    if dtype is None:
        dtype = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or torch.float32
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    size = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * size
