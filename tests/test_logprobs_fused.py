"""The fused Triton lm head (aha.algos.logprobs_fused) against the plain chunked one in float64
(aha.algos.logprobs, itself checked against a full log-softmax in test_algos_logprobs.py): logprobs, entropies
and both gradients, on fresh random inputs, with targets < 0, a temperature, chunks that split the rows and a
vocabulary that is not a multiple of the kernel's block.

Runs on a CUDA device, or on the CPU through the Triton interpreter (TRITON_INTERPRET=1, as conftest sets);
skipped where triton is not importable.
"""

import os

import pytest
import torch

from aha._triton import HAS_TRITON
from aha.algos import logprobs_fused
from aha.algos.logprobs import fused_default, token_logprobs_entropy

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not HAS_TRITON or (DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs triton on a GPU, or TRITON_INTERPRET=1",
)
DTYPES = [torch.float32, torch.bfloat16] if DEV == "cuda" else [torch.float32]


def case(seed, N=37, H=16, V=2048 + 301, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.5
    tgt = torch.randint(0, V, (N,), generator=g)
    tgt[torch.randperm(N, generator=g)[:5]] = -100  # padding: logp 0, no gradient
    a = torch.randn(N, generator=g, dtype=torch.float64)  # upstream gradients
    b = torch.randn(N, generator=g, dtype=torch.float64)
    # the kernels see the inputs rounded to `dtype`: the float64 reference starts from the same values
    h, w = h.to(dtype).to(torch.float64), w.to(dtype).to(torch.float64)
    return h, w, tgt, a, b


def run(h, w, tgt, a, b, *, fused, dtype, temperature, chunk, with_entropy):
    h = h.to(DEV, dtype).detach().clone().requires_grad_()
    w = w.to(DEV, dtype).detach().clone().requires_grad_()
    logp, ent = token_logprobs_entropy(
        h[None], w, tgt.to(DEV)[None], temperature=temperature, chunk_size=chunk,
        with_entropy=with_entropy, fused=fused,
    )  # fmt: skip
    loss = (logp[0].double() * a.to(DEV)).sum()
    if with_entropy:
        loss = loss + (ent[0].double() * b.to(DEV)).sum()
    loss.backward()
    out = [logp[0], ent[0] if with_entropy else None, h.grad, w.grad]
    return [None if x is None else x.detach().double().cpu() for x in out]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "temperature,chunk,with_entropy", [(1.0, 16, True), (0.7, 37, True), (1.3, 8, False)]
)
def test_fused_matches_float64_reference(dtype, temperature, chunk, with_entropy):
    for seed in range(2):
        h, w, tgt, a, b = case(seed, dtype=dtype)
        kw = dict(temperature=temperature, chunk=chunk, with_entropy=with_entropy)
        ref = run(h, w, tgt, a, b, fused=False, dtype=torch.float64, **kw)
        got = run(h, w, tgt, a, b, fused=True, dtype=dtype, **kw)
        # bf16 logits (the matmul's output dtype, as in the plain path on a GPU) carry ~3 significant digits
        tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.15, rtol=0.05)
        for name, x, y in zip(("logp", "entropy", "grad_h", "grad_w"), got, ref):
            if y is not None:
                torch.testing.assert_close(x, y, **tol, msg=lambda m, n=name: f"{n}: {m}")
        assert (got[0][tgt < 0] == 0).all()  # padding targets: logp exactly 0


def test_no_grad_forward_and_shapes():
    h, w, tgt, _, _ = case(3, N=9, V=700)
    with torch.no_grad():
        lp, ent = token_logprobs_entropy(
            h.float()[None].to(DEV), w.float().to(DEV), tgt[None].to(DEV), fused=True
        )
        ref, ref_ent = token_logprobs_entropy(h[None], w, tgt[None], fused=False)
    assert lp.shape == (1, 9) and lp.dtype == torch.float32
    torch.testing.assert_close(lp.double().cpu(), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ent.double().cpu(), ref_ent, atol=1e-4, rtol=1e-4)


def test_default_path(monkeypatch):
    """Fused only for CUDA tensors (never float64), off with AHA_FAST_TRITON=0; CPU runs stay plain."""
    assert not fused_default(torch.zeros(1))
    if DEV == "cuda":
        assert fused_default(torch.zeros(1, device=DEV, dtype=torch.bfloat16))
        assert not fused_default(torch.zeros(1, device=DEV, dtype=torch.float64))
        monkeypatch.setenv("AHA_FAST_TRITON", "0")
        assert not fused_default(torch.zeros(1, device=DEV, dtype=torch.bfloat16))
    assert logprobs_fused.FUSED_CHUNK >= 1024


def test_strided_targets_and_out_of_range_ids():
    """Targets that are a strided view (a public caller's tensor) give the contiguous result; an id >= V is an
    error, as on the plain path (the kernel would read another row)."""
    h, w, tgt, _, _ = case(4, N=8, V=700)
    wide = torch.stack([tgt, torch.zeros_like(tgt)], 1).reshape(1, -1)[:, ::2]  # stride 2
    assert wide.stride(-1) == 2 and torch.equal(wide[0], tgt)
    args = (h.float()[None].to(DEV), w.float().to(DEV))
    with torch.no_grad():
        got, _ = token_logprobs_entropy(*args, wide.to(DEV), fused=True)
        ref, _ = token_logprobs_entropy(*args, tgt[None].to(DEV), fused=True)
    torch.testing.assert_close(got, ref)
    bad = tgt.clone()
    bad[3] = 700
    with pytest.raises(ValueError, match="outside the vocabulary of 700"):
        token_logprobs_entropy(*args, bad[None].to(DEV), fused=True)
    # check_targets=False (the caller checked; no host sync): an id out of range stays inside the row's block
    with torch.no_grad():
        logp, ent = token_logprobs_entropy(
            *args, bad[None].to(DEV), fused=True, check_targets=False
        )
    assert torch.isfinite(logp).all() and torch.isfinite(ent).all()
    torch.testing.assert_close(logp[0, :3], ref[0, :3])  # the other rows are untouched
    torch.testing.assert_close(logp[0, 4:], ref[0, 4:])
