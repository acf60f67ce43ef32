"""Token sampling on the device, returning the chosen token and its logprob.

logprob = log_softmax(logits / T)[token], taken before top-k/top-p truncation (the distribution the policy
defines; see aha.rollout.base); at T = 0 the token is argmax(logits) and the logprob is unscaled.

Sampling from p = softmax(filtered / T) is Gumbel-max: token = argmax_i (filtered_i / T - log(-log u_i)),
which picks i with probability p_i and needs no host synchronisation (no multinomial). The uniforms u come
from noise.py, keyed by (seed, completion index, token index, vocabulary id), so a completion's samples do not
depend on its batch row, the decode step or its neighbours (the torch path can also take a torch.Generator).
Filtering follows HF's order: top-k (keep logits >= the k-th largest), then top-p (keep the smallest set of
most likely tokens whose mass reaches p: token i survives when the mass strictly above it is < p).

`sample_fused` (Triton, top_p = 1 and top_k = 0 only, the usual RL setting) reads the bf16 logits once:
an online log-sum-exp and the Gumbel-max argmax in one pass over vocabulary slices, then a merge per row; the
keys are read from device tensors, so the step can be CUDA-graph captured. Same noise bits as the torch path.
"""

from __future__ import annotations

import torch

from ..._triton import tl, triton
from .noise import uniform

if triton is not None:
    from .noise import keys32, uniform32

if triton is not None:

    @triton.jit
    def _consume(ptr, off0, q, end, inv_t, u, m, s, best, best_x, best_i, GREEDY: tl.constexpr):
        """Fold one block into per-lane running state (max, sum-exp, best score, its logit, its id): purely
        elementwise, so the loop has no cross-warp reductions (those made a first version latency-bound)."""
        off = off0 + q
        msk = off < end
        x = tl.load(ptr + off, mask=msk, other=float("-inf")).to(tl.float32) * inv_t
        m_new = tl.maximum(m, x)  # m starts at -1e30, so m_new is finite
        s = s * tl.exp(m - m_new) + tl.exp(x - m_new)
        if GREEDY:
            score = x
        else:
            score = tl.where(msk, x - tl.log(-tl.log(u)), float("-inf"))
        take = score > best  # strict: a lane keeps its first (lowest) id on ties
        best_i = tl.where(take, off, best_i)
        best_x = tl.where(take, x, best_x)
        best = tl.where(take, score, best)
        return m_new, s, best, best_x, best_i

    @triton.jit
    def _sample_part_kernel(
        LOGITS, sl, V, CH, TEMP, SEED, SEQ, T, PART, NS, GREEDY: tl.constexpr, Q: tl.constexpr
    ):
        # program (row, part) scans logits[row, part*CH : (part+1)*CH] in blocks of 4*Q
        row = tl.program_id(0).to(tl.int64)
        part = tl.program_id(1)
        if GREEDY:
            inv_t = 1.0
        else:
            inv_t = 1.0 / tl.load(TEMP)
        k1, k2 = keys32(tl.load(SEED), tl.load(SEQ + row), tl.load(T + row))
        q = tl.arange(0, Q)
        m = tl.full([Q], -1e30, tl.float32)
        s = tl.zeros([Q], tl.float32)
        best = tl.full([Q], float("-inf"), tl.float32)
        best_x = tl.zeros([Q], tl.float32)
        best_i = tl.zeros([Q], tl.int32)
        start = part * CH
        end = tl.minimum(start + CH, V)
        ptr = LOGITS + row * sl
        for v0 in range(start, end, 4 * Q):
            for j in tl.static_range(4):
                off = v0 + j * Q
                if GREEDY:
                    u = tl.zeros([Q], tl.float32)
                else:
                    u = uniform32(off + q, k1, k2)
                m, s, best, best_x, best_i = _consume(
                    ptr, off, q, end, inv_t, u, m, s, best, best_x, best_i, GREEDY
                )
        mx = tl.max(m, 0)
        total = tl.sum(s * tl.exp(m - mx), 0)
        b = tl.max(best, 0)
        i = tl.min(tl.where(best == b, best_i, 2147483647), 0)  # lowest id among tied lanes
        x = tl.max(tl.where((best == b) & (best_i == i), best_x, float("-inf")), 0)
        o = (row * NS + part) * 5
        tl.store(PART + o, mx)
        tl.store(PART + o + 1, total)
        tl.store(PART + o + 2, b)
        tl.store(PART + o + 3, x)
        tl.store(PART + o + 4, i.to(tl.float32))  # exact: vocabulary ids < 2**24

    @triton.jit
    def _sample_merge_kernel(PART, NS, TOK, LP, BNS: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        p = tl.arange(0, BNS)
        pm = p < NS
        o = (row * NS + p) * 5
        m = tl.load(PART + o, mask=pm, other=float("-inf"))
        s = tl.load(PART + o + 1, mask=pm, other=0.0)
        b = tl.load(PART + o + 2, mask=pm, other=float("-inf"))
        x = tl.load(PART + o + 3, mask=pm, other=0.0)
        i = tl.load(PART + o + 4, mask=pm, other=0.0)
        mx = tl.max(m, 0)
        total = tl.sum(tl.where(s > 0, s * tl.exp(m - mx), 0.0), 0)
        j = tl.argmax(b, 0)  # first part on ties -> lowest token id
        tl.store(TOK + row, tl.sum(tl.where(p == j, i, 0.0), 0).to(tl.int64))
        tl.store(LP + row, tl.sum(tl.where(p == j, x, 0.0), 0) - (mx + tl.log(total)))


def sample_fused(
    logits: torch.Tensor,
    temp: torch.Tensor,
    seed: torch.Tensor,
    seq: torch.Tensor,
    t: torch.Tensor,
    greedy: bool,
    num_sms: int = 132,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V) any float dtype; temp (1,) fp32, seed (1,) int64, seq/t (B,) int64 device tensors (the
    noise keys: completion index, token index).

    The vocabulary is split into NS parts so that B * NS programs fill the GPU; partial
    (max, sum-exp, best Gumbel score, its logit, its id) are merged per row by a second small kernel."""
    B, V = logits.shape
    Q = 512
    ns = 1
    while ns < 64 and B * ns < 4 * num_sms:
        ns *= 2
    per = -(-V // ns)
    ch = -(-per // (4 * Q)) * 4 * Q  # part length, a whole number of 4*Q blocks
    ns = -(-V // ch)
    part = torch.empty((B, ns, 5), dtype=torch.float32, device=logits.device)
    tok = torch.empty(B, dtype=torch.int64, device=logits.device)
    lp = torch.empty(B, dtype=torch.float32, device=logits.device)
    _sample_part_kernel[(B, ns)](
        logits, logits.stride(0), V, ch, temp, seed, seq, t, part, ns, GREEDY=greedy, Q=Q,
        num_warps=4,
    )  # fmt: skip
    _sample_merge_kernel[(B,)](
        part, ns, tok, lp, BNS=max(2, 1 << (ns - 1).bit_length()), num_warps=1
    )
    return tok, lp


def filter_logits(logits: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """(B, V) scaled logits -> same with the removed tokens at -inf (top-k, then top-p)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_l, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_l, dim=-1)
        above = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
        remove = above >= top_p
        remove[:, 0] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def sample_torch(
    logits: torch.Tensor,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    keys: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V) -> (token (B,) int64, logprob (B,) fp32). keys = (seed (1,), seq (B,), t (B,)): the
    counter-based noise of noise.py (what the engine uses); without keys, noise from `generator`."""
    logits = logits.float()
    if temperature == 0:
        tok = logits.argmax(dim=-1)
        return tok, torch.log_softmax(logits, dim=-1).gather(1, tok[:, None]).squeeze(1)
    scaled = logits * (1.0 / torch.tensor(temperature, dtype=torch.float32))
    logp = torch.log_softmax(scaled, dim=-1)
    if keys is not None:
        u = uniform(*keys, logits.shape[-1])
    else:
        u = torch.rand(scaled.shape, generator=generator, device=scaled.device)
        u = u.clamp_(min=2**-24, max=1 - 2**-24)
    tok = (filter_logits(scaled, top_p, top_k) - torch.log(-torch.log(u))).argmax(dim=-1)
    return tok, logp.gather(1, tok[:, None]).squeeze(1)
