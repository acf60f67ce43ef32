"""Per-token log-probabilities and entropies of the sampled tokens, without a (B, T, V) float32 tensor.

For row n (one position of one sequence), with z = hidden_n @ weight.T / temperature (a (V,) logit row):
    logp_n    = z[target_n] - logsumexp(z)
    entropy_n = logsumexp(z) - sum_v softmax(z)_v * z_v
Vocabularies are 150k+: a full float32 log-softmax over B*T = 16k rows is ~10 GB. `token_logprobs_entropy`
works on `chunk_size` rows at a time, so at most one chunk's (chunk_size, V) logits (plus a few temporaries of
that size) exist at once, forward and backward. The backward does not keep the chunks from the forward: a
custom autograd.Function saves only hidden, weight, targets and the per-row logsumexp/entropy, and recomputes
each chunk's logits. With p = softmax(z), the gradients w.r.t. the logits are
    d logp_n / dz = onehot(target_n) - p
    d entropy_n / dz = -p * (log p + entropy_n)
and dz/dhidden = weight / temperature, dz/dweight = hidden / temperature.

The matmul runs in the inputs' dtype (bf16 on GPU, like the model's own lm_head); logits are then upcast to
float32 (float64 if the inputs are float64) for the softmax. The weight gradient is accumulated over chunks in
float32 (or float64). The lm_head must have no bias (true for Qwen2/2.5/3 and Llama). A target < 0 (e.g. -100
on padding) gives logp 0 and no gradient through it.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .._triton import HAS_TRITON
from .logprobs_fused import FUSED_CHUNK, FusedLogpEntropy


def _logits(h: Tensor, weight: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    z = (h @ weight.T).to(dtype)  # (c, V)
    return z.div_(temperature) if temperature != 1.0 else z


class _ChunkedLogpEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size, with_entropy):
        # hidden (N, H), weight (V, H), targets (N,)
        N = hidden.shape[0]
        cdt = torch.promote_types(hidden.dtype, torch.float32)
        logp = torch.zeros(N, dtype=cdt, device=hidden.device)
        lse = torch.empty(N, dtype=cdt, device=hidden.device)
        ent = torch.zeros(N if with_entropy else 0, dtype=cdt, device=hidden.device)
        for s in range(0, N, chunk_size):
            e = min(s + chunk_size, N)
            z = _logits(hidden[s:e], weight, temperature, cdt)  # (c, V)
            lse_c = torch.logsumexp(z, dim=-1)  # (c,)
            tgt = targets[s:e]
            picked = z.gather(1, tgt.clamp(min=0)[:, None])[:, 0]
            logp[s:e] = torch.where(
                tgt >= 0, picked - lse_c, torch.zeros((), dtype=cdt, device=z.device)
            )
            lse[s:e] = lse_c
            if with_entropy:
                p = torch.softmax(z, dim=-1)
                ent[s:e] = lse_c - torch.linalg.vecdot(p, z)
            del z
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.temperature, ctx.chunk_size, ctx.with_entropy = temperature, chunk_size, with_entropy
        if not with_entropy:
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        N, cdt = hidden.shape[0], lse.dtype
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = (
            torch.zeros(
                weight.shape,
                dtype=torch.promote_types(weight.dtype, torch.float32),
                device=weight.device,
            )
            if need_w
            else None
        )
        use_ent = ctx.with_entropy and g_ent is not None
        g_logp = torch.where(
            targets >= 0, g_logp.to(cdt), torch.zeros((), dtype=cdt, device=lse.device)
        )
        for s in range(0, N, ctx.chunk_size):
            e = min(s + ctx.chunk_size, N)
            h = hidden[s:e]
            gl = g_logp[s:e, None]  # (c, 1)
            logp_all = _logits(h, weight, ctx.temperature, cdt).sub_(
                lse[s:e, None]
            )  # (c, V), in place
            p = logp_all.exp()
            # coef = g_logp + g_ent * (log p + H); dL/dz = -p * coef + onehot(target) * g_logp  (all in place)
            if use_ent:
                coef = logp_all.add_(ent[s:e, None]).mul_(g_ent[s:e, None].to(cdt)).add_(gl)
            else:
                coef = gl
            gz = p.mul_(coef).neg_()
            del logp_all, coef
            gz.scatter_add_(1, targets[s:e].clamp(min=0)[:, None], gl)
            if ctx.temperature != 1.0:
                gz.div_(ctx.temperature)
            gz = gz.to(hidden.dtype)
            if need_h:
                grad_h[s:e] = gz @ weight  # (c, H)
            if need_w:
                grad_w.add_(gz.T @ h)  # (V, H)
            del gz, p
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None, None


def fused_default(hidden: Tensor) -> bool:
    """Whether the lm head takes the fused Triton path by default for `hidden` (fused_on its device/dtype)."""
    return fused_on(hidden.device, hidden.dtype)


def fused_on(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> bool:
    """A CUDA device, a 16/32-bit float type, triton importable and AHA_FAST_TRITON not 0 (the engine's
    switch)."""
    return (
        HAS_TRITON
        and device.type == "cuda"
        and dtype != torch.float64
        and os.environ.get("AHA_FAST_TRITON", "1") != "0"
    )


def token_logprobs_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    with_entropy: bool = True,
    fused: bool | None = None,
    check_targets: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """hidden (B, T, H), weight (V, H) (the lm_head), targets (B, T) token ids ->
    (logp (B, T), entropy (B, T) or None), float32 (float64 for float64 inputs); differentiable w.r.t. hidden
    and weight. targets[b, t] is the token whose logprob row (b, t) predicts (the caller shifts by one).
    fused: the Triton kernels of logprobs_fused.py (None: on CUDA when triton imports, not for float64);
    chunk_size: rows per chunk (None: 1,024 plain, 2,048 fused).
    check_targets=False skips the fused path's check that every target is < V (one host sync) where the caller
    has checked already; an id out of range then reads a wrong logit, never outside the block.
    """
    if fused is None:
        fused = fused_default(hidden)
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}; greedy rollouts score at temperature 1.0"
        )
    if chunk_size is None:
        chunk_size = FUSED_CHUNK if fused else 1024
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if (
        hidden.shape[:-1] != targets.shape
        or weight.dim() != 2
        or weight.shape[1] != hidden.shape[-1]
    ):
        raise ValueError(
            f"need hidden (B, T, H), weight (V, H), targets (B, T); got {tuple(hidden.shape)}, "
            f"{tuple(weight.shape)}, {tuple(targets.shape)}"
        )
    lead = targets.shape
    args = (
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        targets.reshape(-1).to(torch.long),
        float(temperature),
        int(chunk_size),
        bool(with_entropy),
    )
    if fused:
        logp, ent = FusedLogpEntropy.apply(*args, bool(check_targets))
    else:
        logp, ent = _ChunkedLogpEntropy.apply(*args)
    return logp.view(lead), (ent.view(lead) if with_entropy else None)


def logprobs_from_logits(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """Plain version for small vocabularies / tests: logits (B, T, V), targets (B, T) -> logp (B, T) float32."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return (
        logp.gather(-1, targets.clamp(min=0).long().unsqueeze(-1))
        .squeeze(-1)
        .masked_fill(targets < 0, 0.0)
    )


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """logits (B, T, V) -> entropy (B, T) float32 of softmax(logits / temperature)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)
