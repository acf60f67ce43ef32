"""The value model: a scalar head on a causal LM's decoder; initialised from the policy; HF-loadable files."""

import torch

from aha.models.load import load_model
from aha.models.value import HEAD_FILE, ValueModel


def ids(B=2, L=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 90, (B, L), generator=g)


def test_values_are_the_head_on_the_policy_decoder_hidden_states():
    policy, _ = load_model("tiny-random", device="cpu", seed=3)
    value = ValueModel.from_pretrained("tiny-random", device="cpu", seed=3)
    for (name, p), (name_v, q) in zip(
        policy.get_decoder().state_dict().items(), value.backbone.state_dict().items()
    ):
        assert name == name_v and torch.equal(p, q), name  # initialised from the policy
    with torch.no_grad():  # a non-trivial head
        value.value_head.weight.normal_(generator=torch.Generator().manual_seed(0))
        value.value_head.bias.fill_(0.3)
    x = ids()
    mask = torch.ones_like(x)
    mask[1, 5:] = 0  # right padding
    v = value(x, mask)
    assert v.shape == x.shape and v.dtype == torch.float32
    with torch.no_grad():
        h = policy.get_decoder()(input_ids=x, attention_mask=mask).last_hidden_state  # (B, L, H)
        ref = h @ value.value_head.weight[0] + value.value_head.bias[0]
    torch.testing.assert_close(v.detach(), ref, rtol=1e-5, atol=1e-6)
    # causal: a position's value does not depend on later tokens
    y = x.clone()
    y[:, 4:] = 5
    torch.testing.assert_close(value(y)[:, :4].detach(), value(x)[:, :4].detach())
    value(x).sum().backward()
    assert (
        value.backbone.embed_tokens.weight.grad.abs().sum() > 0
        and value.value_head.weight.grad.abs().sum() > 0
    )


def test_checkpointed_critic_has_the_same_gradients():
    """gradient_checkpointing=True checkpoints every backbone layer (the policy's non-reentrant setting) and
    changes no gradient."""
    x = ids(seed=5)
    grads = []
    for ckpt in (False, True):
        value = ValueModel.from_pretrained(
            "tiny-random", device="cpu", seed=3, gradient_checkpointing=ckpt
        )
        with torch.no_grad():
            value.value_head.weight.normal_(generator=torch.Generator().manual_seed(1))
        assert all(layer.gradient_checkpointing is ckpt for layer in value.backbone.layers)
        value(x).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in value.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_zero_head_starts_at_zero_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    v = ValueModel.from_pretrained("tiny-random", device="cpu", seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(
        v(ids()), torch.zeros(2, 7)
    )  # V = 0 at step 0: first advantages are the rewards


def test_save_load_round_trip_is_hf_loadable(tmp_path):
    from transformers import AutoModel

    v = ValueModel.from_pretrained("tiny-random", device="cpu")
    with torch.no_grad():
        v.value_head.weight.normal_()
        v.value_head.bias.fill_(0.5)
        v.backbone.norm.weight.mul_(1.5)  # differs from the random init: the files must carry it
    v.save_pretrained(tmp_path / "vm")
    assert (tmp_path / "vm" / "config.json").is_file() and (tmp_path / "vm" / HEAD_FILE).is_file()
    backbone = AutoModel.from_pretrained(tmp_path / "vm")  # plain transformers opens the backbone
    torch.testing.assert_close(backbone.norm.weight, v.backbone.norm.weight)
    x = ids()
    w = ValueModel.from_pretrained(
        str(tmp_path / "vm"), device="cpu", seed=9
    )  # the saved head, not a fresh one
    torch.testing.assert_close(w(x), v(x))
    # a full state dict passed in (as FSDP gathers it) is what gets written
    sd = {k: t.clone() for k, t in v.state_dict().items()}
    sd["value_head.bias"].fill_(-2.0)
    v.save_pretrained(tmp_path / "vm2", state_dict=sd)
    assert (
        ValueModel.from_pretrained(str(tmp_path / "vm2"), device="cpu").value_head.bias.item()
        == -2.0
    )


def test_a_causal_lm_directory_gets_a_fresh_head(tmp_path):
    policy, tok = load_model("tiny-random", device="cpu", seed=4)
    policy.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    v = ValueModel.from_pretrained(str(tmp_path / "lm"), device="cpu")
    torch.testing.assert_close(
        v.backbone.embed_tokens.weight, policy.get_decoder().embed_tokens.weight
    )
    assert v.value_head.weight.abs().max() == 0 and v.value_head.bias.abs().max() == 0
