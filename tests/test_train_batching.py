"""Micro-batching must not change the update: gradients summed over micro-batches equal the full batch's,
for every loss aggregation; and the chunked training forward equals the plain HF forward."""

from dataclasses import replace
from unittest.mock import patch

import pytest
import torch

from aha import algos
from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import Completion
from aha.train.batching import build_batch, micro_batches
from aha.train.forward import sequence_logprobs


def random_batch(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    prompts = [
        torch.randint(3, 90, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
        for _ in range(3)
    ]
    comps = []
    for i in range(n):
        k = int(torch.randint(0, 7, (1,), generator=g))  # k = 0: an empty completion
        toks = torch.randint(3, 90, (k,), generator=g).tolist()
        comps.append(
            Completion(
                prompt_index=i % 3,
                token_ids=toks,
                logprobs=[-1.0] * k,
                finish_reason="length" if i % 4 == 0 else "stop",
            )
        )
    adv = torch.randn(n, generator=g)
    return prompts, comps, adv


def test_build_batch_masks_completion_targets():
    prompts, comps, adv = random_batch()
    b = build_batch(prompts, comps, adv, pad_id=0)
    for i, c in enumerate(comps):
        p = len(prompts[c.prompt_index])
        targets = b.input_ids[i, 1:][b.loss_mask[i].bool()].tolist()
        assert targets == c.token_ids  # exactly the completion tokens
        assert b.input_ids[i, :p].tolist() == prompts[c.prompt_index]
    masked = build_batch(prompts, comps, adv, pad_id=0, mask_truncated=True)
    for i, c in enumerate(comps):
        assert (masked.loss_mask[i].sum() == 0) == (c.finish_reason == "length" or not c.token_ids)


def test_micro_batches_respect_size_and_token_budget():
    prompts, comps, adv = random_batch(n=12)
    b = build_batch(prompts, comps, adv, pad_id=0)
    lengths = b.attention_mask.sum(1)
    for size, budget in [(4, 0), (5, 0), (12, 30), (3, 12)]:
        mbs = micro_batches(b, size, budget)
        assert sorted(i for mb in mbs for i in mb) == list(range(12))
        for mb in mbs:
            assert len(mb) <= size
            if budget and len(mb) > 1:
                assert int(lengths[mb].max()) * len(mb) <= budget


def test_forward_matches_hf_logits():
    tok = char_tokenizer()
    model = tiny_model(len(tok), seed=3)
    prompts, comps, adv = random_batch(seed=1)
    b = build_batch(prompts, comps, adv, pad_id=0)
    logp, ent = sequence_logprobs(
        model, b.input_ids, b.attention_mask, temperature=0.7, with_entropy=True
    )
    with torch.no_grad():
        logits = (
            model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1].double()
            / 0.7
        )
    ref = torch.log_softmax(logits, -1)
    ref_logp = ref.gather(-1, b.input_ids[:, 1:, None])[..., 0]
    ref_ent = -(ref.exp() * ref).sum(-1)
    m = b.attention_mask[:, 1:].bool()
    assert torch.allclose(logp.double()[m], ref_logp[m], atol=1e-5)
    assert torch.allclose(ent.double()[m], ref_ent[m], atol=1e-5)


@pytest.mark.parametrize("agg", algos.AGGS)
def test_micro_batch_gradients_sum_to_full_batch(agg):
    tok = char_tokenizer()
    prompts, comps, adv = random_batch(seed=2, n=8)
    b = build_batch(prompts, comps, adv, pad_id=0, mask_truncated=True)
    denom = algos.agg_denominator(b.loss_mask, agg)

    def grads(split):
        model = tiny_model(len(tok), seed=4)
        for idx in split:
            mb = b.select(idx)
            logp, _ = sequence_logprobs(model, mb.input_ids, mb.attention_mask)
            old = logp.detach() - 0.15 * (
                mb.input_ids[:, 1:] % 3
            )  # ratios != 1 (some clipped), same in any split
            loss, _ = algos.policy_loss(
                logp, old, mb.advantages, mb.loss_mask, agg=agg, norm_len=8, denom=denom
            )
            loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    full = grads([list(range(8))])
    for size in (1, 3):
        assert torch.allclose(grads(micro_batches(b, size)), full, atol=1e-6, rtol=1e-4)


def test_update_refuses_ids_outside_the_vocabulary_in_one_line(tmp_path):
    """The update checks the batch's ids once on the CPU (so its forwards need no host sync for it)."""
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.grpo import GRPOTrainer

    cfg = load_config(
        TrainConfig,
        None,
        [
            "model.path=tiny-random",
            "steps=1",
            f"out={tmp_path}",
            "engine=hf",
            "logging.progress=false",
            "algorithm.mu=2",
        ],
    )
    tr = GRPOTrainer(cfg)
    try:
        V = tr.model.get_output_embeddings().weight.shape[0]
        done = Completion(prompt_index=0, token_ids=[4, V + 5], logprobs=[-1.0, -1.0])
        batch = build_batch([[1, 2, 3]], [done], torch.ones(1), 0, False)
        with pytest.raises(
            ValueError, match=rf"in \[0, {V}\).*got 1\.\.{V + 5}; check the tokenizer"
        ):
            tr.update(batch)
        # a good batch is read once, though the no-grad pass for the old logprobs (mu > 1) checks it first
        good = build_batch([[1, 2, 3]], [replace(done, token_ids=[4, 5])], torch.ones(1), 0, False)
        reads = []
        real_min = torch.Tensor.min
        with patch.object(
            torch.Tensor, "min", lambda t, *a, **k: reads.append(t) or real_min(t, *a, **k)
        ):
            tr.update(good)
        assert [t is good.input_ids for t in reads].count(True) == 1
        with pytest.raises(
            ValueError, match="check the tokenizer"
        ):  # a new bad batch is checked again
            tr.update(batch)
    finally:
        tr.close()
