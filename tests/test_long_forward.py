"""The training forward for long sequences: right-padded batches run without an attention mask (causal alone is
exact for real tokens), no (L, L) or (B, L, V) tensor is ever created, forward or backward, and the result equals
the plain Hugging Face computation (full logits, masked attention) in float64, values and gradients."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aha.models.tiny import tiny_model
from aha.train import forward as F
from aha.train.forward import LogprobModel, sequence_logprobs

V = 60


def padded(B: int, L: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(L // 2, L + 1, (B,), generator=g)
    lens[0] = L
    ids = torch.randint(3, V, (B, L), generator=g)
    mask = (torch.arange(L) < lens[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def reference(model, ids, mask, temperature):
    """The obvious computation: HF's forward with its attention mask, full (B, L, V) log-softmax."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].double() / temperature
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, ids[:, 1:, None])[..., 0]
    return logp, -(logp_all.exp() * logp_all).sum(-1)


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_equals_masked_full_logits_float64(family):
    model = tiny_model(V, family=family, seed=3, dtype=torch.float64)
    ids, mask = padded(4, 24, seed=1)
    keep = (mask[:, 1:] * mask[:, :-1]).double()  # real targets of real positions
    g = torch.Generator().manual_seed(2)
    w1, w2 = (
        torch.randn(ids.shape[0], ids.shape[1] - 1, generator=g, dtype=torch.float64) for _ in "ab"
    )
    grads = []
    for fn in (
        lambda: sequence_logprobs(
            model, ids, mask, temperature=0.7, with_entropy=True, chunk_size=5
        ),
        lambda: reference(model, ids, mask, 0.7),
    ):
        model.zero_grad(set_to_none=True)
        logp, ent = fn()
        ((logp * w1 * keep).sum() + (ent * w2 * keep).sum()).backward()
        grads.append(
            (
                logp.detach() * keep,
                ent.detach() * keep,
                [p.grad.clone() for p in model.parameters()],
            )
        )
    (lp, en, g1), (lp0, en0, g0) = grads
    torch.testing.assert_close(lp, lp0, rtol=0, atol=1e-10)
    torch.testing.assert_close(en, en0, rtol=0, atol=1e-10)
    assert any(float(c.abs().max()) > 1e-3 for c in g0)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)


def test_mask_dropped_only_when_right_padded(monkeypatch):
    model = tiny_model(V, seed=4)
    seen = []
    decoder = model.get_decoder()
    real = decoder.forward
    monkeypatch.setattr(
        decoder, "forward", lambda **kw: seen.append(kw["attention_mask"]) or real(**kw)
    )
    ids, mask = padded(3, 10, seed=5)
    assert F.right_padded(mask)
    sequence_logprobs(model, ids, mask)
    assert seen[-1] is None
    left = mask.flip(1)  # left padding: the mask matters
    assert not F.right_padded(left)
    sequence_logprobs(model, ids, left)
    assert seen[-1] is left


class Largest(TorchDispatchMode):
    """The largest numel of any tensor an aten op produces, forward and backward."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_no_quadratic_or_full_vocab_tensor():
    # B = 2 rows of L = 512, vocabulary 200: an (L, L) mask or score matrix has 262,144 numbers (524,288 for both
    # rows), the (B, L-1, V) logits 204,400; the largest legitimate tensor is the MLP's (B, L, I) = 65,536.
    model = tiny_model(200, seed=6, max_position_embeddings=1024)
    ids, mask = padded(2, 512, seed=7)
    wrapper = LogprobModel(model)
    with Largest() as rec:
        logp, ent = wrapper(ids, mask, with_entropy=True, chunk_size=16)
        (logp.sum() + ent.sum()).backward()
    B, L = ids.shape
    assert rec.numel <= B * L * model.config.intermediate_size < B * (L - 1) * 200 < L * L


def test_sharing_only_where_it_saves_tokens(monkeypatch):
    model = tiny_model(V, seed=8, dtype=torch.float64)
    n = []
    real = LogprobModel.shared_forward
    monkeypatch.setattr(
        LogprobModel, "shared_forward", lambda self, *a: n.append(1) or real(self, *a)
    )

    def group(prompt: int, completion: int, G: int = 4):
        p = torch.randint(3, V, (prompt,)).tolist()
        rows = [p + torch.randint(3, V, (completion,)).tolist() for _ in range(G)]
        ids = torch.tensor(rows)
        return ids, torch.ones_like(ids), torch.full((G,), prompt)

    ids, mask, plens = group(prompt=20, completion=10)  # saves 3 x 20 of 120 tokens: shared
    sequence_logprobs(model, ids, mask, prompt_lens=plens)
    assert len(n) == 1
    ids, mask, plens = group(prompt=2, completion=60)  # saves 6 of 248 tokens: plain
    sequence_logprobs(model, ids, mask, prompt_lens=plens)
    assert len(n) == 1
    assert F.worth_sharing(10, 100) and not F.worth_sharing(9, 100)


def test_a_maskless_forward_asks_transformers_no_packed_rows_question(monkeypatch):
    """transformers' packed-sequence check (a host sync per forward on a GPU) is not run by the maskless forward,
    whose rows never pack; the result is still the masked reference's, the check is back afterwards, and a
    forward with a mask (left padding) leaves it alone."""
    masking_utils = pytest.importorskip("transformers.masking_utils")
    if not hasattr(masking_utils, "find_packed_sequence_indices"):
        pytest.skip("this transformers has no packed-sequence check")
    calls = []

    def spy(position_ids):
        calls.append(position_ids.shape)
        return None

    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", spy)
    model = tiny_model(V, seed=4, dtype=torch.float64)
    ids, mask = padded(3, 20, seed=5)
    logp, _ = sequence_logprobs(model, ids, mask, padded_right=True)
    assert calls == []
    assert masking_utils.find_packed_sequence_indices is spy
    want, _ = reference(model, ids, mask, 1.0)
    keep = (mask[:, 1:] * mask[:, :-1]).bool()
    torch.testing.assert_close(logp[keep], want[keep])
    model(
        input_ids=ids, use_cache=False
    )  # a plain HF forward outside still asks (what was skipped)
    assert calls == [(3, 20)]
    left = mask.flip(1)  # left padding: the mask is passed and nothing is skipped
    sequence_logprobs(model, ids, left)
    assert masking_utils.find_packed_sequence_indices is spy
