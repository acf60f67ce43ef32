"""Counter-based sampling noise: u(seed, seq, t, v) in (0, 1), a pure function of the call's seed, the
completion's prompt-major index `seq`, the token's index `t` in the completion and the vocabulary id `v`.

Why: a completion's samples must not depend on which batch row it ran in, at which decode step, or beside
which other sequences - else a preempted and recomputed sequence, an aborted neighbour or a smaller KV cache
would change them. A stateful generator (torch.Generator, Philox keyed by step and row) cannot give that; a
hash of (seed, seq, t, v) can, with no state to carry across preemption.

Construction, all in 32-bit unsigned arithmetic (the torch version holds the values in int64 and masks; the
multiplier constants are < 2^31, so no int64 product overflows, and both paths give the same bits):
    mix(x)    = xorshift-multiply-xorshift finaliser (x ^= x>>16; x *= A; x ^= x>>15; x *= B; x ^= x>>15)
    stream    k1 = mix(mix(mix(seed_lo) ^ seq) ^ t),  k2 = mix(mix(mix(seed_hi ^ C) ^ t) ^ seq)
    element   u = ((mix(mix(v ^ k1) ^ k2) >> 9) + 0.5) / 2^23     (exact in fp32, never 0 or 1)
Two streams draw the same numbers only if both 32-bit keys collide (~2^-64). Sampling uses the Gumbel-max
form: token = argmax_v (logits_v / T - log(-log u_v)), which picks v with probability softmax(logits / T)_v.
The statistical quality is checked by the sampler frequency tests (chi-square over tens of thousands draws).
"""

from __future__ import annotations

import torch

from ..._triton import tl, triton, use_triton

M32 = 0xFFFFFFFF
A, B, C = 0x21F0AAAD, 0x735A2D97, 0x2545F491


def _mix(x: torch.Tensor) -> torch.Tensor:
    """x int64 holding uint32 values -> mixed, same range."""
    x = x ^ (x >> 16)
    x = (x * A) & M32
    x = x ^ (x >> 15)
    x = (x * B) & M32
    return x ^ (x >> 15)


def stream_keys(seed: torch.Tensor, seq: torch.Tensor, t: torch.Tensor):
    """seed (1,) int64 >= 0, seq (B,), t (B,) int64 -> k1, k2 (B,) int64 in [0, 2^32)."""
    lo, hi = seed & M32, (seed >> 32) & M32
    seq, t = seq & M32, t & M32
    k1 = _mix(_mix(_mix(lo) ^ seq) ^ t)
    k2 = _mix(_mix(_mix(hi ^ C) ^ t) ^ seq)
    return k1, k2


def uniform_torch(seed, seq, t, V: int) -> torch.Tensor:
    """(B, V) fp32 uniforms u(seed, seq[b], t[b], v)."""
    k1, k2 = stream_keys(seed, seq, t)
    v = torch.arange(V, device=seq.device)
    x = _mix(_mix(v[None, :] ^ k1[:, None]) ^ k2[:, None])
    return ((x >> 9).float() + 0.5) * (1.0 / 8388608.0)


if triton is not None:

    @triton.jit
    def mix32(x):
        x ^= x >> 16
        x *= 0x21F0AAAD
        x ^= x >> 15
        x *= 0x735A2D97
        x ^= x >> 15
        return x

    @triton.jit
    def keys32(seed, seq, t):
        """Scalars: seed int64 >= 0, seq and t int64 -> the stream keys (uint32)."""
        lo = (seed & 0xFFFFFFFF).to(tl.uint32)
        hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
        s = (seq & 0xFFFFFFFF).to(tl.uint32)
        tt = (t & 0xFFFFFFFF).to(tl.uint32)
        k1 = mix32(mix32(mix32(lo) ^ s) ^ tt)
        k2 = mix32(mix32(mix32(hi ^ 0x2545F491) ^ tt) ^ s)
        return k1, k2

    @triton.jit
    def uniform32(v, k1, k2):
        """v: int32 vocabulary ids (a block) -> fp32 uniforms in (0, 1)."""
        x = mix32(mix32(v.to(tl.uint32) ^ k1) ^ k2)
        return ((x >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)

    @triton.jit
    def _uniform_kernel(SEED, SEQ, T, OUT, V, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        k1, k2 = keys32(tl.load(SEED), tl.load(SEQ + row), tl.load(T + row))
        for v0 in range(0, V, BLOCK):
            v = v0 + tl.arange(0, BLOCK)
            tl.store(OUT + row * V + v, uniform32(v, k1, k2), mask=v < V)


def uniform(seed: torch.Tensor, seq: torch.Tensor, t: torch.Tensor, V: int) -> torch.Tensor:
    """(B, V) fp32 uniforms u(seed, seq[b], t[b], v): Triton on the GPU, else torch (same bits)."""
    if not use_triton(seq):
        return uniform_torch(seed, seq, t, V)
    out = torch.empty((seq.shape[0], V), dtype=torch.float32, device=seq.device)
    _uniform_kernel[(seq.shape[0],)](seed, seq, t, out, V, BLOCK=1024)
    return out
