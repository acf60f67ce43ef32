"""Chunked log-prob/entropy: equal to the naive full log-softmax (float64), gradients included, and it never
creates or keeps a tensor with more than one chunk of logits."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aha.algos.logprobs import entropy_from_logits, logprobs_from_logits, token_logprobs_entropy


def naive(hidden, weight, targets, temperature=1.0):
    """The obvious reference in float64: full (B, T, V) log-softmax."""
    z = (hidden.double() @ weight.double().T) / temperature
    logp_all = torch.log_softmax(z, -1)
    logp = logp_all.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * (targets >= 0)
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def inputs(B, T, H, V, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(V, H, generator=g, dtype=dtype).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=g)
    return hidden, weight, targets


@pytest.mark.parametrize("chunk_size,temperature", [(1, 1.0), (4, 0.7), (7, 1.3), (1000, 1.0)])
def test_matches_naive_values_and_grads(chunk_size, temperature):
    hidden, weight, targets = inputs(3, 5, 8, 11, seed=chunk_size)
    targets[1, 2] = -100  # ignored position
    logp, ent = token_logprobs_entropy(
        hidden, weight, targets, temperature=temperature, chunk_size=chunk_size
    )
    ref_logp, ref_ent = naive(hidden, weight, targets, temperature)
    assert logp.dtype == ent.dtype == torch.float32 and logp.shape == (3, 5)
    torch.testing.assert_close(logp.double(), ref_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-5, atol=1e-5)
    assert logp[1, 2] == 0
    # a loss mixing both outputs, as the trainer does (policy term + entropy bonus)
    g = torch.Generator().manual_seed(9)
    a, b = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    gh, gw = torch.autograd.grad((a * logp + b * ent).sum(), (hidden, weight))
    rh, rw = torch.autograd.grad(
        (a.double() * ref_logp + b.double() * ref_ent).sum(), (hidden, weight)
    )
    torch.testing.assert_close(gh.double(), rh.double(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw.double(), rw.double(), rtol=1e-4, atol=1e-5)


def test_without_entropy_and_logprobs_only_grad():
    hidden, weight, targets = inputs(2, 4, 6, 9, seed=3)
    logp, ent = token_logprobs_entropy(hidden, weight, targets, chunk_size=3, with_entropy=False)
    assert ent is None
    ref_logp, _ = naive(hidden, weight, targets)
    gh, gw = torch.autograd.grad(logp.sum(), (hidden, weight))
    rh, rw = torch.autograd.grad(ref_logp.sum(), (hidden, weight))
    torch.testing.assert_close(gh.double(), rh.double(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw.double(), rw.double(), rtol=1e-4, atol=1e-5)
    # frozen lm_head (e.g. LoRA): only the hidden gradient
    (gh2,) = torch.autograd.grad(
        token_logprobs_entropy(hidden, weight.detach(), targets)[0].sum(), (hidden,)
    )
    torch.testing.assert_close(gh2, gh)


def test_gradcheck_float64():
    hidden, weight, targets = inputs(2, 3, 4, 5, seed=4, dtype=torch.float64)
    targets[0, 1] = -100

    def fn(h, w):
        logp, ent = token_logprobs_entropy(h, w, targets, temperature=0.8, chunk_size=2)
        return logp, ent

    assert torch.autograd.gradcheck(fn, (hidden, weight))


def test_plain_helpers():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 7, generator=g)
    targets = torch.randint(0, 7, (2, 3), generator=g)
    ref = torch.log_softmax(logits.double() / 0.5, -1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(
        logprobs_from_logits(logits, targets, 0.5).double(), ref, rtol=1e-5, atol=1e-5
    )
    # uniform logits: entropy log V
    torch.testing.assert_close(
        entropy_from_logits(torch.zeros(1, 1, 7)), torch.log(torch.tensor([[7.0]]))
    )


def test_errors():
    hidden, weight, targets = inputs(1, 2, 4, 5, seed=6)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs_entropy(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match="weight"):
        token_logprobs_entropy(hidden, weight[:, :3], targets)


class LargestTensor(TorchDispatchMode):
    """Records the largest numel of any tensor an aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def test_memory_is_one_chunk_not_all_rows():
    # 8 x 32 = 256 rows, V = 300, H = 4, chunk 16: one chunk of logits is 4,800 numbers; all rows 76,800.
    B, T, H, V, chunk = 8, 32, 4, 300, 16
    hidden, weight, targets = inputs(B, T, H, V, seed=7)

    # 1. Nothing the size of a chunk's logits is saved for backward (only hidden, weight, targets, 2 x N stats).
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        logp, ent = token_logprobs_entropy(hidden, weight, targets, chunk_size=chunk)
    assert sum(saved) <= hidden.numel() + weight.numel() + 3 * B * T
    saved_naive = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved_naive.append(t.numel()) or t, lambda t: t
    ):
        naive(hidden, weight, targets)
    assert max(saved_naive) >= B * T * V  # the check does see a full log-softmax when there is one

    # 2. No op, forward or backward, produces a tensor larger than one chunk of logits.
    probe = LargestTensor()
    with probe:
        logp, ent = token_logprobs_entropy(hidden, weight, targets, chunk_size=chunk)
        torch.autograd.grad((logp + ent).sum(), (hidden, weight))
    assert probe.max_numel <= chunk * V, probe.max_numel
    probe_naive = LargestTensor()
    with probe_naive:
        naive(hidden, weight, targets)
    assert probe_naive.max_numel >= B * T * V


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_does_not_grow_with_rows():
    # Qwen2.5-0.5B-like lm_head in bf16: V = 151,936, H = 896. Peak extra memory for 2k vs 16k rows must differ
    # only by the O(rows * H) inputs/grads, not by rows * V * 4 bytes (16k rows: ~9.7 GB of float32 logits).
    V, H, chunk = 151936, 896, 1024
    weight = (torch.randn(V, H, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_()
    peaks = {}
    for rows in (2048, 16384):
        hidden = torch.randn(1, rows, H, device="cuda", dtype=torch.bfloat16).requires_grad_()
        targets = torch.randint(0, V, (1, rows), device="cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        logp, ent = token_logprobs_entropy(hidden, weight, targets, chunk_size=chunk)
        (logp.sum() + 0.01 * ent.sum()).backward()
        torch.cuda.synchronize()
        peaks[rows] = torch.cuda.max_memory_allocated() - base
        del hidden, logp, ent
        weight.grad = None
    one_chunk_fp32 = chunk * V * 4
    rows_term = (16384 - 2048) * H * 2 * 4  # hidden + its grad, with slack
    print(
        {k: round(v / 2**20) for k, v in peaks.items()},
        "MiB; one fp32 chunk:",
        one_chunk_fp32 // 2**20,
        "MiB",
    )
    assert peaks[16384] - peaks[2048] <= rows_term
    assert peaks[16384] < 16384 * V * 4 / 4  # far below a quarter of the full float32 logits
