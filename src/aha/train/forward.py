"""The training forward: per-token logprobs (and entropy) of the targets, without a (B, T, V) log-softmax.

`LogprobModel` wraps a causal LM: the decoder gives hidden states and `aha.algos.logprobs.token_logprobs_entropy`
projects them onto the vocabulary chunk by chunk. Logits are divided by the sampling temperature so that the
trainer's logprobs are those of the distribution the engine sampled from (the engine reports the same
quantity). The wrapper is the module the optimizer, checkpoints and FSDP2 see: its forward is the one entry
point, so FSDP's root hooks gather the embeddings and head for it and reduce their gradients afterwards.
"""
from __future__ import annotations

import torch

from ..algos.logprobs import token_logprobs_entropy
from ..models.load import unwrap


class LogprobModel(torch.nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm                       # the HF causal LM (possibly PEFT-wrapped); state-dict prefix "lm."

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, temperature: float = 1.0,
                with_entropy: bool = False, chunk_size: int = 1024):
        """input_ids, attention_mask: (B, L) right-padded -> logp (B, L-1) of input_ids[:, 1:], entropy or None."""
        base = unwrap(self.lm)
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                    use_cache=False).last_hidden_state      # (B, L, H)
        weight = base.get_output_embeddings().weight                      # (V, H)
        return token_logprobs_entropy(hidden[:, :-1], weight, input_ids[:, 1:], temperature=temperature,
                                      chunk_size=chunk_size, with_entropy=with_entropy)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, temperature: float = 1.0,
                      with_entropy: bool = False, chunk_size: int = 1024):
    """The same for a LogprobModel or a bare causal LM."""
    wrapper = model if isinstance(model, LogprobModel) else LogprobModel(model)
    return wrapper(input_ids, attention_mask, temperature=temperature, with_entropy=with_entropy,
                   chunk_size=chunk_size)
