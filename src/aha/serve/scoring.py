"""Top-k alternatives and prompt logprobs by one teacher-forced forward, for `top_logprobs` and `echo`.

The engines return the logprob of each sampled token only. When a request asks for the k most likely tokens
at each position (`logprobs=k` on /v1/completions, `top_logprobs=k` on chat) or for the prompt's own logprobs
(`echo` with `logprobs`), the server runs the served model once over prompt + completion, on the engine's
thread, and reads them off: at position t, log_softmax(logits_t / T) where T is the request's temperature
(1 when greedy), the distribution the engine sampled from and reported logprobs of. The (L, V) logits are
computed `chunk` positions at a time, so a 150k vocabulary over a long sequence never materialises at once.
Only requests that ask pay for it.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def score(
    model, ids: list[int], start: int, temperature: float, k: int, chunk: int = 256
) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """For each position t in [start, len(ids)), t >= 1: log p(ids[t] | ids[:t]) and the k most likely
    (token id, logprob) there, most likely first. Returns (logprobs, top), one entry per position."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    start = max(start, 1)
    if start >= len(ids):
        return [], []
    device = next(base.parameters()).device
    was_training = base.training
    base.eval()
    try:
        x = torch.tensor([ids], device=device)  # (1, L)
        hidden = base.get_decoder()(input_ids=x, use_cache=False).last_hidden_state[0]  # (L, H)
        head = base.get_output_embeddings()
        temp = temperature if temperature > 0 else 1.0
        logps: list[float] = []
        tops: list[list[tuple[int, float]]] = []
        for s in range(start - 1, len(ids) - 1, chunk):  # row t-1 predicts token t
            e = min(s + chunk, len(ids) - 1)
            logp = (head(hidden[s:e]).float() / temp).log_softmax(-1)  # (c, V)
            logps += logp.gather(1, x[0, s + 1 : e + 1, None])[:, 0].tolist()
            if k > 0:
                val, idx = logp.topk(min(k, logp.shape[-1]), dim=-1)  # (c, k)
                tops += [list(zip(i, v)) for i, v in zip(idx.tolist(), val.tolist())]
            else:
                tops += [[] for _ in range(e - s)]
    finally:
        base.train(was_training)
    return logps, tops
