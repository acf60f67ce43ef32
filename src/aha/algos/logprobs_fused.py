"""The chunked lm head of aha.algos.logprobs with its vocabulary-wide elementwise work fused into two Triton
kernels (GPU; the CPU runs them only through Triton's interpreter, in tests).

The plain chunked version (logprobs.py) upcasts each (chunk, V) block of logits to float32 and makes about ten
passes over it (logsumexp, gather, softmax, entropy; in the backward: the log-softmax again, exp, the
coefficient, the scatter, the cast back). With V = 152k those passes, not the matmuls, were 75% of the lm head's
time on an H200 (0.45 s of a 0.5B model's 1.2 s update at 60k tokens). Here, per chunk of rows:

    forward:  z = h @ W.T (cuBLAS, the inputs' dtype)  ->  _fwd_kernel: one read of z per row, an online
              max / sum-exp / sum-exp*z in float32 lanes  ->  logp, logsumexp, entropy (float32)
    backward: z = h @ W.T again  ->  _bwd_kernel: one read and one in-place write of z, the gradient w.r.t. the
              logits (the formulas of logprobs.py)  ->  grad_h = gz @ W, grad_W += gz.T @ h (float32 sum)

So a chunk needs only its (chunk, V) block in the inputs' dtype, and the chunk can be 4x longer than the plain
version's at less memory (2,048 x 152k bf16 = 0.6 GB against 1,024 x 152k x (2 + 3 x 4) bytes). The maths, the
temperature and the target < 0 convention are those of logprobs.py, which is the reference the tests hold this
to (tests/test_logprobs_fused.py, float64 inputs, fresh random values).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .._triton import tl, triton

FUSED_CHUNK = 2048  # rows per chunk: a (2048, V) block in bf16, 0.6 GB for V = 152k
BLOCK_V = 2048  # vocabulary lanes per program step

if triton is not None:

    @triton.jit
    def _fwd_kernel(Z, sz, TGT, LOGP, LSE, ENT, V, inv_t, BLOCK: tl.constexpr):
        # one program per row: per-lane running max m, sum-exp s and sum-exp * x t over the row's V logits
        row = tl.program_id(0).to(tl.int64)
        base = Z + row * sz
        lanes = tl.arange(0, BLOCK)
        m = tl.full([BLOCK], -1e30, tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        t = tl.zeros([BLOCK], tl.float32)
        for off0 in range(0, V, BLOCK):
            off = off0 + lanes
            ok = off < V
            x = tl.load(base + off, mask=ok, other=0.0).to(tl.float32) * inv_t
            x = tl.where(ok, x, -1e30)
            m_new = tl.maximum(m, x)
            a = tl.exp(m - m_new)
            e = tl.where(ok, tl.exp(x - m_new), 0.0)
            s = s * a + e
            t = t * a + e * tl.where(ok, x, 0.0)
            m = m_new
        mx = tl.max(m, 0)
        sc = tl.exp(m - mx)
        S = tl.sum(s * sc, 0)
        T = tl.sum(t * sc, 0)
        lse = mx + tl.log(S)
        tgt = tl.load(TGT + row)
        picked = tl.load(base + tl.minimum(tl.maximum(tgt, 0), V - 1)).to(tl.float32) * inv_t
        tl.store(LOGP + row, tl.where(tgt >= 0, picked - lse, 0.0))
        tl.store(LSE + row, lse)
        tl.store(ENT + row, lse - T / S)

    @triton.jit
    def _bwd_kernel(
        Z, sz, TGT, LSE, ENT, GLOGP, GENT, V, inv_t, USE_ENT: tl.constexpr, BLOCK: tl.constexpr
    ):
        # program (row, block): dL/dz of the block, written over z (in z's dtype), already times 1/T
        row = tl.program_id(0).to(tl.int64)
        off = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = off < V
        ptr = Z + row * sz + off
        x = tl.load(ptr, mask=ok, other=0.0).to(tl.float32) * inv_t
        lp = x - tl.load(LSE + row)
        p = tl.exp(lp)
        g = tl.load(GLOGP + row)  # 0 where the target is < 0
        if USE_ENT:
            coef = g + tl.load(GENT + row) * (lp + tl.load(ENT + row))
        else:
            coef = g
        tgt = tl.load(TGT + row)
        gz = tl.where(off == tgt, g, 0.0) - p * coef
        tl.store(ptr, (gz * inv_t).to(Z.dtype.element_ty), mask=ok)


def _fwd_chunk(z: Tensor, tgt: Tensor, inv_t: float):
    c, V = z.shape
    out = [torch.empty(c, dtype=torch.float32, device=z.device) for _ in range(3)]
    _fwd_kernel[(c,)](z, z.stride(0), tgt, *out, V, inv_t, BLOCK=BLOCK_V)
    return out  # logp, lse, ent


def check_targets(targets: Tensor, vocab: int) -> None:
    """The kernels read z[target] unchecked: a target >= V would read another row (the plain path's gather
    raises). One host sync per call."""
    if targets.numel() and int(targets.max()) >= vocab:
        raise ValueError(f"target id {int(targets.max())} is outside the vocabulary of {vocab}")


def _on(t: Tensor):
    """Triton launches on the current CUDA device: make it t's (model.device=cuda:1 in one process)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class FusedLogpEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size, with_entropy, check=True):
        # hidden (N, H), weight (V, H), targets (N,) -> logp (N,), entropy (N,) or (0,), float32
        with _on(hidden):
            return FusedLogpEntropy._forward(
                ctx,
                hidden,
                weight,
                targets.contiguous(),
                temperature,
                chunk_size,
                with_entropy,
                check,
            )

    @staticmethod
    def _forward(ctx, hidden, weight, targets, temperature, chunk_size, with_entropy, check):
        if check:
            check_targets(targets, weight.shape[0])
        N = hidden.shape[0]
        logp = torch.empty(N, dtype=torch.float32, device=hidden.device)
        lse, ent = torch.empty_like(logp), torch.empty_like(logp)
        for s in range(0, N, chunk_size):
            e = min(s + chunk_size, N)
            z = hidden[s:e] @ weight.T  # (c, V)
            logp[s:e], lse[s:e], ent[s:e] = _fwd_chunk(z, targets[s:e], 1.0 / temperature)
            del z
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.temperature, ctx.chunk_size, ctx.with_entropy = temperature, chunk_size, with_entropy
        if not with_entropy:
            ent = ent[:0]
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        with _on(ctx.saved_tensors[0]):
            return FusedLogpEntropy._backward(ctx, g_logp, g_ent)

    @staticmethod
    def _backward(ctx, g_logp, g_ent):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        N, V = hidden.shape[0], weight.shape[0]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        )
        use_ent = ctx.with_entropy and g_ent is not None
        g_logp = torch.where(targets >= 0, g_logp.float(), 0.0).contiguous()
        g_ent = g_ent.float().contiguous() if use_ent else g_logp
        for s in range(0, N, ctx.chunk_size):
            e = min(s + ctx.chunk_size, N)
            h = hidden[s:e]
            gz = h @ weight.T  # (c, V): the logits, overwritten with their gradient
            _bwd_kernel[(e - s, triton.cdiv(V, BLOCK_V))](
                gz, gz.stride(0), targets[s:e], lse[s:e], ent[s:e], g_logp[s:e], g_ent[s:e],
                V, 1.0 / ctx.temperature, USE_ENT=use_ent, BLOCK=BLOCK_V,
            )  # fmt: skip
            if need_h:
                grad_h[s:e] = gz @ weight  # (c, H)
            if need_w:
                grad_w.add_(gz.T @ h)  # (V, H)
            del gz
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None, None, None
