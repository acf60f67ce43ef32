"""HFEngine follows the Engine protocol: prompt-major, logprobs of the sampled distribution, stop handling."""

import pytest
import torch

from aha.models.tiny import char_tokenizer, tiny_model
from aha.rollout import HFEngine, SamplingParams


def setup():
    tok = char_tokenizer()
    return tiny_model(len(tok), seed=1), tok


def reference_logprobs(model, prompt, tokens, temperature):
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].double()
    if temperature > 0:
        logits = logits / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


@pytest.mark.parametrize(
    "budget", [1 << 30, 0]
)  # decode-time logits kept / a second teacher-forced forward
def test_prompt_major_and_logprobs_match_forward(budget):
    model, tok = setup()
    prompts = [tok("12+34=").input_ids, tok("a much longer prompt").input_ids]
    out = HFEngine(model, tok, logits_budget=budget).generate(
        prompts, SamplingParams(n=3, temperature=0.7, max_tokens=12, seed=0)
    )
    assert [c.prompt_index for c in out] == [0, 0, 0, 1, 1, 1]
    for c in out:
        assert len(c.token_ids) == len(c.logprobs) == 12 and c.finish_reason == "length"
        ref = reference_logprobs(model, prompts[c.prompt_index], c.token_ids, 0.7)
        assert torch.allclose(torch.tensor(c.logprobs, dtype=torch.float64), ref, atol=1e-4)
        assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)


def test_greedy_is_argmax_and_seeded_sampling_repeats():
    model, tok = setup()
    p = [tok("hello").input_ids]
    eng = HFEngine(model, tok)
    g = eng.generate(p, SamplingParams(temperature=0, max_tokens=8))[0]
    ids = p[0][:]
    for t in g.token_ids:  # each greedy token is the argmax of the forward on the prefix
        with torch.no_grad():
            assert int(model(torch.tensor([ids])).logits[0, -1].argmax()) == t
        ids.append(t)
    a = eng.generate(p, SamplingParams(n=4, max_tokens=8, seed=5))
    b = eng.generate(p, SamplingParams(n=4, max_tokens=8, seed=5))
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert len({tuple(c.token_ids) for c in a}) > 1


def test_stop_token_ends_completion():
    model, tok = setup()
    p = [tok("x").input_ids]
    eng = HFEngine(model, tok)
    free = eng.generate(p, SamplingParams(temperature=0, max_tokens=6))[0]
    stop = free.token_ids[2]
    out = eng.generate(p, SamplingParams(temperature=0, max_tokens=6, stop_token_ids=[stop]))[0]
    first = free.token_ids.index(stop)
    assert out.token_ids == free.token_ids[: first + 1] and out.finish_reason == "stop"


def test_no_stop_ids_means_no_stop_even_if_the_checkpoint_has_an_eos():
    model, tok = setup()
    p = [tok("x").input_ids]
    greedy = HFEngine(model, tok).generate(p, SamplingParams(temperature=0, max_tokens=6))[0]
    model.generation_config.eos_token_id = greedy.token_ids[
        0
    ]  # the checkpoint's own eos: must be ignored
    out = HFEngine(model, tok).generate(p, SamplingParams(temperature=0, max_tokens=6))[0]
    assert out.token_ids == greedy.token_ids and out.finish_reason == "length"


def test_logits_path_equals_forward_path_with_early_stops():
    model, tok = setup()
    prompts = [tok("12+34=").input_ids, tok("ab").input_ids]
    sp = SamplingParams(
        n=4, temperature=1.3, max_tokens=16, seed=3, stop_token_ids=[tok("e").input_ids[0]]
    )
    kept = HFEngine(model, tok).generate(prompts, sp)
    fwd = HFEngine(model, tok, logits_budget=0).generate(prompts, sp)
    assert [c.token_ids for c in kept] == [c.token_ids for c in fwd]
    assert any(c.finish_reason == "stop" for c in kept)  # rows that finished early (then padded)
    for a, b in zip(kept, fwd):
        ref = reference_logprobs(model, prompts[a.prompt_index], a.token_ids, 1.3)
        assert torch.allclose(torch.tensor(a.logprobs, dtype=torch.float64), ref, atol=1e-4)
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
