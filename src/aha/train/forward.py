"""The training forward: per-token logprobs (and entropy) of the targets, without a (B, T, V) log-softmax.

The decoder gives hidden states; `aha.algos.logprobs.token_logprobs_entropy` projects them onto the
vocabulary chunk by chunk. Logits are divided by the sampling temperature so that the trainer's logprobs
are those of the distribution the engine sampled from (the engine reports the same quantity).
"""
from __future__ import annotations

import torch

from ..algos.logprobs import token_logprobs_entropy
from ..models.load import unwrap


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, temperature: float = 1.0,
                      with_entropy: bool = False, chunk_size: int = 1024):
    """input_ids, attention_mask: (B, L) right-padded -> logp (B, L-1) of input_ids[:, 1:], entropy or None."""
    base = unwrap(model)
    hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                use_cache=False).last_hidden_state          # (B, L, H)
    weight = base.get_output_embeddings().weight                          # (V, H)
    return token_logprobs_entropy(hidden[:, :-1], weight, input_ids[:, 1:], temperature=temperature,
                                  chunk_size=chunk_size, with_entropy=with_entropy)
