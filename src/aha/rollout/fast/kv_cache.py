"""The paged KV cache: a pool of fixed-size pages shared by all sequences, and the host-side page allocator.

Layout per layer: k[l], v[l] of shape (num_pages * page_size, KVH, D), so a cache position is one flat slot
index (page * page_size + offset) and prefill/decode write with one index_copy. Page 0 is never handed out:
finished sequences that still run in a CUDA-graph batch write their (ignored) K/V there.

A prompt's full pages are shared by its n samples (refcounted); the partly filled last page is copied to
each sample's first private page, so samples never write into a shared page.

kv_cache_dtype="fp8" stores K and V as float8 e4m3 with one fp32 scale per (token, KV head): x ~ x8 * scale,
scale = max|x| / 448 over the head's D values (written with the token, layers.rope_cache), so every head uses
the format's full range whatever its magnitude (Qwen2.5's keys carry large biases, values are small). Half the
bytes of bf16 plus 4 per head (3% at head dim 128): twice the tokens in the same memory. On a GPU its decode
attention is a CUDA kernel (attention_fp8.py), 1.4x faster than bf16's on an H200. The rollout then samples from a slightly different distribution than the policy in bf16 (the update's logprobs come
from the training forward; rollout/logp_mismatch shows the gap).
"""

from __future__ import annotations

import torch

KV_DTYPES = ("auto", "fp8")
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite e4m3 value
SCALE_BYTES = 4  # one fp32 scale per token and KV head (fp8 only)


def kv_storage(kv_cache_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """The cache's element type: the model's ("auto") or float8 e4m3 ("fp8")."""
    if kv_cache_dtype not in KV_DTYPES:
        raise ValueError(
            f"kv_cache_dtype must be one of {', '.join(KV_DTYPES)}, got {kv_cache_dtype!r}"
        )
    return FP8 if kv_cache_dtype == "fp8" else model_dtype


def token_bytes(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """One token's K and V over all layers in a cache of element type dtype (fp8: with its scales)."""
    size = torch.empty((), dtype=dtype).element_size()
    per_head = head_dim * size + (SCALE_BYTES if dtype == FP8 else 0)
    return 2 * num_layers * num_kv_heads * per_head


def raw(t: torch.Tensor) -> torch.Tensor:
    """An fp8 tensor as bytes (torch has no CPU indexing kernels for float8), others as they are."""
    return t.view(torch.uint8) if t.dtype == FP8 else t


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., D) -> (float8 e4m3 values, fp32 scale per row (...)): x ~ values * scale[..., None]."""
    xf = x.float()
    scale = xf.abs().amax(-1).clamp(min=1e-30) / FP8_MAX
    return (xf / scale[..., None]).to(FP8), scale


def dequantize(x8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (x8.float() * scale[..., None]).to(dtype)


def gather(
    cache: torch.Tensor, scale: torch.Tensor | None, idx: torch.Tensor, dtype
) -> torch.Tensor:
    """cache[idx] (one layer's K or V) in dtype: dequantized when the cache is fp8 (scale given)."""
    if scale is None:
        return cache[idx].to(dtype)
    return dequantize(raw(cache)[idx].view(FP8), scale[idx], dtype)


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
        """dtype: the cache's element type (kv_storage: the model's, or float8 e4m3 with scales)."""
        if num_pages < 2:
            raise ValueError(
                f"KV cache needs at least 2 pages, got {num_pages}; raise the memory budget"
            )
        self.num_pages, self.page_size = num_pages, page_size
        shape = (num_layers, num_pages * page_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.k_scale = self.v_scale = None  # (num_layers, slots, KVH) fp32 when fp8
        if dtype == FP8:
            self.k_scale = torch.zeros(shape[:3], dtype=torch.float32, device=device)
            self.v_scale = torch.zeros(shape[:3], dtype=torch.float32, device=device)

    @staticmethod
    def bytes_per_page(num_layers, page_size, num_kv_heads, head_dim, dtype) -> int:
        return page_size * token_bytes(num_layers, num_kv_heads, head_dim, dtype)

    def layer(self, i: int) -> tuple:
        """Layer i's (k, v, k_scale, v_scale); the scales are None unless fp8."""
        if self.k_scale is None:
            return self.k[i], self.v[i], None, None
        return self.k[i], self.v[i], self.k_scale[i], self.v_scale[i]

    @property
    def nbytes(self) -> int:
        scales = 0 if self.k_scale is None else self.k_scale.nbytes + self.v_scale.nbytes
        return self.k.nbytes + self.v.nbytes + scales

    def copy_page(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy whole pages src[i] -> dst[i] in every layer (src, dst: int64 page ids on the cache device)."""
        off = torch.arange(self.page_size, device=src.device)
        s = (src[:, None] * self.page_size + off).reshape(-1)
        d = (dst[:, None] * self.page_size + off).reshape(-1)
        for t in (self.k, self.v, self.k_scale, self.v_scale):
            if t is not None:
                raw(t)[:, d] = raw(t)[:, s]


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


def kv_bytes_per_token(
    model_or_config, dtype: torch.dtype | None = None, kv_cache_dtype: str = "auto"
) -> int:
    """Bytes one token's K and V take in FastEngine's cache: 2 x layers x KV heads x head dim x element size
    (kv_cache_dtype="fp8": 1 byte per element plus a 4-byte scale per head).

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
    store = kv_storage(kv_cache_dtype, dtype)
    return token_bytes(cfg.num_hidden_layers, kv_heads, head_dim, store)
