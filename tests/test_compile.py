"""model.compile=true: the training forward with torch.compile'd decoder layers equals the eager one (logprobs,
entropies, gradients), under activation checkpointing (the memory plan's usual choice on a GPU), for two
micro-batch shapes in a row (dynamic shapes: no recompilation per length); the reference model copied from a
compiled policy keeps its own weights."""

import pytest
import torch

from aha.config import ConfigError
from aha.models.load import load_model, reference_model
from aha.schema import ModelConfig
from aha.train.forward import can_share, sequence_logprobs


def forward_backward(model, ids, mask):
    logp, ent = sequence_logprobs(model, ids, mask, with_entropy=True)
    (logp.sum() + 0.1 * ent.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logp.detach(), ent.detach(), grads


def test_compiled_layers_match_eager():
    kw = dict(device="cpu", dtype="float32", seed=0, gradient_checkpointing=True)
    eager, _ = load_model("tiny-random", **kw)
    compiled, _ = load_model("tiny-random", compile_layers=True, **kw)
    layers = compiled.get_decoder().layers
    assert all(getattr(layer, "_compiled_call_impl", None) is not None for layer in layers)
    # the shared-prompt forward's cache would recompile per layer: compiled models take the plain forward
    assert not can_share(compiled) and can_share(load_model("tiny-random", device="cpu")[0])
    g = torch.Generator().manual_seed(1)
    for B, L in ((3, 11), (2, 17)):
        ids = torch.randint(1, eager.config.vocab_size, (B, L), generator=g)
        mask = torch.ones(B, L, dtype=torch.long)
        mask[0, L - 3 :] = 0  # right padding
        ref, got = forward_backward(eager, ids, mask), forward_backward(compiled, ids, mask)
        torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got[1], ref[1], atol=1e-5, rtol=1e-4)
        assert got[2].keys() == ref[2].keys() and len(ref[2]) > 0
        for name in ref[2]:
            torch.testing.assert_close(got[2][name], ref[2][name], atol=1e-5, rtol=1e-4)
    # The KL term's reference is a deep copy of the compiled policy: it must compute with its own (frozen)
    # weights, not call the policy's compiled layers.
    reference = reference_model(compiled)
    with torch.no_grad():
        before = sequence_logprobs(compiled, ids, mask)[0]
        for p in compiled.parameters():
            p.add_(0.25)
        with reference() as frozen:
            torch.testing.assert_close(sequence_logprobs(frozen, ids, mask)[0], before)


def test_compile_is_training_only():
    with pytest.raises(ConfigError, match="model.compile"):
        ModelConfig(compile=True).check_inference("sample")
