"""The shared-prefix training forward (each distinct prompt once, completions against its KV cache) equals the
plain forward over full rows: logprobs, entropies and parameter gradients, for qwen2/llama/qwen3 and LoRA; it
falls back where sharing is impossible or pointless; a GRPO step is the same with it on or off."""

import dataclasses

import pytest
import torch

from aha.config import load_config
from aha.models.tiny import tiny_model
from aha.rollout import Completion
from aha.train import forward as F
from aha.train.batching import build_batch
from aha.train.config import TrainConfig
from aha.train.forward import LogprobModel, sequence_logprobs

V = 60


def rows(seed: int, repeats=(3, 1, 4, 2, 1)):
    """A batch of prompts of different lengths, prompt k repeated repeats[k] times (not adjacent: rows are
    interleaved), completions of 0..7 tokens (at least one empty)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [
        torch.randint(3, V, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist()
        for _ in repeats
    ]
    order = [k for k, n in enumerate(repeats) for _ in range(n)]
    order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
    comps = []
    for i, k in enumerate(order):
        n = 0 if i == 1 else int(torch.randint(0, 8, (1,), generator=g))
        comps.append(
            Completion(
                prompt_index=k,
                token_ids=torch.randint(3, V, (n,), generator=g).tolist(),
                logprobs=[-1.0] * n,
                finish_reason="stop",
            )
        )
    return build_batch(prompts, comps, torch.randn(len(comps), generator=g), pad_id=0)


def exact_norms(monkeypatch):
    """HF's RMSNorms compute in float32 even for float64 inputs; the rounding of their backward's float32 cast then
    differs where the float64 gradients reaching it differ in the last bit (another summation order), ~1e-7
    relative. In float64 throughout, the two forwards agree to ~1e-15 and the comparison can be tight."""
    from transformers.models.llama import modeling_llama
    from transformers.models.qwen2 import modeling_qwen2
    from transformers.models.qwen3 import modeling_qwen3

    def forward(self, h):
        return self.weight * (
            h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        )

    for cls in (
        modeling_qwen2.Qwen2RMSNorm,
        modeling_llama.LlamaRMSNorm,
        modeling_qwen3.Qwen3RMSNorm,
    ):
        monkeypatch.setattr(cls, "forward", forward)


def calls(monkeypatch):
    """Counts the shared forward's runs."""
    n = []
    real = LogprobModel.shared_forward
    monkeypatch.setattr(
        LogprobModel, "shared_forward", lambda self, *a: n.append(1) or real(self, *a)
    )
    return n


def run(model, b, share: bool, seed: int):
    """logp, entropy (B, L-1) and the gradient of a random masked loss of both, w.r.t. the trainable parameters."""
    model.zero_grad(set_to_none=True)
    logp, ent = sequence_logprobs(
        model,
        b.input_ids,
        b.attention_mask,
        temperature=0.7,
        with_entropy=True,
        prompt_lens=b.prompt_lens if share else None,
    )
    g = torch.Generator().manual_seed(seed)
    w1, w2 = (torch.randn(logp.shape, generator=g, dtype=logp.dtype) for _ in range(2))
    m = b.loss_mask.to(logp.dtype)
    ((logp * w1 * m).sum() + (ent * w2 * m).sum()).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return logp.detach() * m, ent.detach() * m, grads


def assert_same(model, b, monkeypatch, atol=1e-10):
    n = calls(monkeypatch)
    lp0, en0, g0 = run(model, b, False, 1)
    assert not n
    lp1, en1, g1 = run(model, b, True, 1)
    assert len(n) == 1  # the shared path did run
    assert b.loss_mask.sum() > 10 and (b.loss_mask.sum(1) == 0).any()
    assert torch.allclose(lp1, lp0, atol=atol, rtol=0) and torch.allclose(
        en1, en0, atol=atol, rtol=0
    )
    assert len(g1) == len(g0) > 0
    for a, c in zip(g1, g0):
        assert torch.allclose(a, c, atol=atol, rtol=0)
    assert any(float(c.abs().max()) > 1e-3 for c in g0)  # a real gradient was compared


@pytest.mark.parametrize("family", ["qwen2", "llama", "qwen3"])
def test_shared_equals_plain_float64(family, monkeypatch):
    exact_norms(monkeypatch)
    model = tiny_model(V, family=family, seed=5, dtype=torch.float64)
    for seed in (0, 1):
        b = rows(seed)
        assert_same(model, b, monkeypatch)
        # Off the completion the shared path returns zeros (the plain one has prompt logprobs, never used).
        logp, _ = sequence_logprobs(model, b.input_ids, b.attention_mask, prompt_lens=b.prompt_lens)
        assert torch.all(logp.detach()[b.loss_mask == 0] == 0)


def test_shared_equals_plain_with_lora(monkeypatch):
    exact_norms(monkeypatch)
    from peft import LoraConfig, get_peft_model

    base = tiny_model(V, family="llama", seed=6, dtype=torch.float64)
    model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    for n, p in model.named_parameters():  # B = 0 at init: make the adapters matter
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    assert_same(model, rows(2), monkeypatch)


def test_stock_float32_model_within_rounding(monkeypatch):
    model = tiny_model(V, seed=7)
    b = rows(3)
    n = calls(monkeypatch)
    lp0, en0, g0 = run(model, b, False, 1)
    lp1, en1, g1 = run(model, b, True, 1)
    assert len(n) == 1
    assert torch.allclose(lp1, lp0, atol=1e-5) and torch.allclose(en1, en0, atol=1e-5)
    for a, c in zip(g1, g0):
        assert torch.allclose(a, c, atol=1e-5 * float(c.abs().max()) + 1e-7)


def test_falls_back_where_sharing_is_pointless_or_impossible(monkeypatch):
    n = calls(monkeypatch)
    model = tiny_model(V, seed=8, dtype=torch.float64)
    distinct = rows(4, repeats=(1, 1, 1))
    plain, _ = sequence_logprobs(model, distinct.input_ids, distinct.attention_mask)
    same, _ = sequence_logprobs(
        model, distinct.input_ids, distinct.attention_mask, prompt_lens=distinct.prompt_lens
    )
    assert not n and torch.equal(plain, same)  # every prompt distinct: the plain forward
    b = rows(5)
    enable = (
        getattr(model, "activation_checkpointing_enable", None)
        or model.gradient_checkpointing_enable
    )
    enable({"use_reentrant": False})
    assert not F.can_share(model)
    sequence_logprobs(model, b.input_ids, b.attention_mask, prompt_lens=b.prompt_lens)
    assert not n
    (
        getattr(model, "activation_checkpointing_disable", None)
        or model.gradient_checkpointing_disable
    )()
    assert F.can_share(model)
    sequence_logprobs(model, b.input_ids, b.attention_mask, prompt_lens=b.prompt_lens)
    assert len(n) == 1


def test_prompt_groups_and_batch_keeps_prompt_lens():
    b = rows(6, repeats=(2, 3))
    first, inv = F.prompt_groups(b.input_ids, b.prompt_lens)
    assert len(first) == 2 and sorted(inv) == [0, 0, 1, 1, 1]
    for i, d in enumerate(inv):  # rows with the same index have the same prompt
        p = int(b.prompt_lens[i])
        assert torch.equal(
            b.input_ids[i, :p], b.input_ids[first[d], : int(b.prompt_lens[first[d]])]
        )
    sel = b.select([4, 1])
    assert torch.equal(sel.prompt_lens, b.prompt_lens[[4, 1]])
    assert torch.equal(sel.to("cpu").prompt_lens, sel.prompt_lens)
    assert dataclasses.replace(b, prompt_lens=None).select([0]).prompt_lens is None


def test_grpo_step_same_with_and_without_sharing(tmp_path, monkeypatch):
    from aha.train.grpo import GRPOTrainer

    n = calls(monkeypatch)
    out = {}
    for share in (True, False):
        c = load_config(
            TrainConfig,
            None,
            [
                "model.path=tiny-random",
                "task.name=arithmetic",
                "sampling.group_size=4",
                "batch.prompts_per_step=2",
                "batch.micro_batch_size=8",
                "sampling.max_new_tokens=12",
                "logging.progress=false",
                "logging.samples_every=0",
                "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
                "rewards.num_workers=1",
                "optim.lr=1e-2",
                "algorithm.beta=0.05",
                "algorithm.mu=2",
                f"batch.share_prefix={str(share).lower()}",
                f"out={tmp_path / str(share)}",
            ],
        )
        tr = GRPOTrainer(c)
        try:
            before = [p.detach().clone() for p in tr.policy.parameters()]
            m = tr.train_step(1)
            out[share] = (m, [p.detach().clone() for p in tr.policy.parameters()])
            assert (
                max(float((a - c).abs().max()) for a, c in zip(out[share][1], before)) > 5e-3
            )  # it moved
        finally:
            tr.close()
    assert len(n) == 4  # ref logprobs, old logprobs (mu = 2) and 2 update passes shared
    (m1, w1), (m0, w0) = out[True], out[False]
    assert (
        m1["reward/std"] > 0 and m1["reward/mean"] == m0["reward/mean"]
    )  # the same samples, a real update
    assert m1["grad_norm"] > 1e-3 and m1["kl"] > 0
    for key in ("loss", "kl", "entropy", "grad_norm"):
        assert m1[key] == pytest.approx(m0[key], rel=1e-5, abs=1e-6), key
    for a, c in zip(w1, w0):
        # Steps are ~lr = 1e-2; Adam's normalised step turns last-bit differences of near-zero gradients into ~1e-5.
        assert torch.allclose(a, c, atol=1e-4)
