"""Token sampling on the device, returning the chosen token and its logprob.

logprob = log_softmax(logits / T)[token], taken before top-k/top-p truncation (the distribution the policy
defines; see aha.rollout.base); at T = 0 the token is argmax(logits) and the logprob is unscaled.

Sampling from p = softmax(filtered / T) uses the exponential race: token = argmax_i p_i / E_i with
E_i ~ Exp(1) i.i.d., which picks i with probability p_i and needs no host synchronisation (no multinomial).
Filtering follows HF's order: top-k (keep logits >= the k-th largest), then top-p (keep the smallest set of
most likely tokens whose mass reaches p: token i survives when the mass strictly above it is < p).

`sample_fused` (Triton, top_p = 1 and top_k = 0 only, the usual RL setting) reads the bf16 logits once:
an online log-sum-exp and a Gumbel-max argmax (argmax_i x_i / T - log(-log U_i), the same law) in one pass,
with Philox noise keyed by (seed, step, row) read from device tensors, so the step can be CUDA-graph captured.
"""
from __future__ import annotations

import torch

from ._triton import tl, triton

if triton is not None:
    @triton.jit
    def _sample_kernel(LOGITS, sl, V, TEMP, SEED, STEP, TOK, LP, GREEDY: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        if GREEDY:
            inv_t = 1.0
        else:
            inv_t = 1.0 / tl.load(TEMP)
        seed = tl.load(SEED) + tl.load(STEP) * 1048576 + row
        m = tl.full([], float("-inf"), tl.float32)
        s = tl.zeros([], tl.float32)
        best = tl.full([], float("-inf"), tl.float32)
        best_x = tl.zeros([], tl.float32)
        best_i = tl.zeros([], tl.int64)
        cols = tl.arange(0, BLOCK)
        for v0 in range(0, V, BLOCK):
            off = v0 + cols
            msk = off < V
            x = tl.load(LOGITS + row * sl + off, mask=msk, other=float("-inf")).to(tl.float32) * inv_t
            m_new = tl.maximum(m, tl.max(x, 0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
            m = m_new
            if GREEDY:
                score = x
            else:
                u = tl.rand(seed, off)
                score = tl.where(msk, x - tl.log(-tl.log(u)), float("-inf"))
            i = tl.argmax(score, 0)
            sv = tl.max(score, 0)
            xi = tl.sum(tl.where(cols == i, x, 0.0), 0)
            take = sv > best
            best_i = tl.where(take, (v0 + i).to(tl.int64), best_i)
            best_x = tl.where(take, xi, best_x)
            best = tl.where(take, sv, best)
        tl.store(TOK + row, best_i)
        tl.store(LP + row, best_x - (m + tl.log(s)))


def sample_fused(logits: torch.Tensor, temp: torch.Tensor, seed: torch.Tensor, step: torch.Tensor,
                 greedy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V) any float dtype; temp (1,) fp32, seed (1,) int64, step (1,) int64 device tensors."""
    B, V = logits.shape
    tok = torch.empty(B, dtype=torch.int64, device=logits.device)
    lp = torch.empty(B, dtype=torch.float32, device=logits.device)
    _sample_kernel[(B,)](logits, logits.stride(0), V, temp, seed, step, tok, lp, GREEDY=greedy, BLOCK=2048,
                         num_warps=8)
    return tok, lp


def filter_logits(logits: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """(B, V) scaled logits -> same with the removed tokens at -inf (top-k, then top-p)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_l, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_l, dim=-1)
        above = torch.cumsum(probs, dim=-1) - probs                     # mass strictly above each token
        remove = above >= top_p
        remove[:, 0] = False                                            # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def sample_torch(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V) -> (token (B,) int64, logprob (B,) fp32)."""
    logits = logits.float()
    if temperature == 0:
        tok = logits.argmax(dim=-1)
        return tok, torch.log_softmax(logits, dim=-1).gather(1, tok[:, None]).squeeze(1)
    scaled = logits / temperature
    logp = torch.log_softmax(scaled, dim=-1)
    probs = torch.softmax(filter_logits(scaled, top_p, top_k), dim=-1)
    e = torch.empty_like(probs).exponential_(generator=generator).clamp_(min=1e-20)
    tok = (probs / e).argmax(dim=-1)
    return tok, logp.gather(1, tok[:, None]).squeeze(1)
