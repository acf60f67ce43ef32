"""benchmarks/update_layouts.py at toy size on the CPU, and the per-layer checkpointing switch it relies on."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import update_layouts  # noqa: E402


def test_tiny_table(capsys):
    rows = update_layouts.main(["--tiny"])
    assert [(r["tokens"], r["ckpt_layers"]) for r in rows] == [(0, 0), (64, 2), (16, 1), (16, 0)]
    assert (
        rows[0]["plan"] == "yes" and rows[0]["micro_batches"] == 1
    )  # no plan on the CPU: no budget
    assert all(r["micro_batches"] == 4 for r in rows[2:])  # a 16-token budget: one sequence each
    assert all(r["update_s"] > 0 and r["mfu"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "| tokens | ckpt_layers | plan | micro_batches | update_s |" in out


def test_each_layer_switches_checkpointing_alone():
    """The benchmark sets layer.gradient_checkpointing per layer after enable_checkpointing: a checkpointed
    layer runs its forward again in the backward, the others once; gradients are the same either way."""
    from aha.models.load import enable_checkpointing
    from aha.models.tiny import tiny_model

    model = tiny_model(40, seed=3).train()
    enable_checkpointing(model)
    layers = model.get_decoder().layers
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        # a pre-hook: the recompute stops early, inside the MLP, once it has what the backward needs
        layer.mlp.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    ids = torch.randint(0, 40, (2, 12))
    grads = []
    for k in range(len(layers) + 1):
        for j, layer in enumerate(layers):
            layer.gradient_checkpointing = j < k
        calls[:] = [0] * len(layers)
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        assert calls == [2 if j < k else 1 for j in range(len(layers))], (k, calls)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    for g in grads[1:]:
        assert torch.allclose(g, grads[0], rtol=1e-5, atol=1e-6)


def test_bad_variant_is_a_usage_error():
    with pytest.raises(SystemExit, match="TOKENS:LAYERS"):
        update_layouts.parse_variants("4096", 2)
    with pytest.raises(SystemExit, match="0-2"):
        update_layouts.parse_variants("4096:3", 2)
    assert update_layouts.parse_variants("8:all,4:none,4:1", 2) == [(8, 2), (4, 0), (4, 1)]
