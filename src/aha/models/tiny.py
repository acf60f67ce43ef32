"""Tiny models and tokenizers built in code, for tests and CPU experiments (nothing is downloaded).

`char_tokenizer()` maps each printable ASCII character to one token (plus <pad>, <eos>, <bos>) and is a real
`PreTrainedTokenizerFast`, so it saves and loads with `AutoTokenizer`. `tiny_model(...)` builds a randomly
initialised HF causal LM of a supported family (hidden 32-64, 2 layers) that any engine can run.
"""

from __future__ import annotations

import string

import torch

from .compat import dtype_kwarg

SPECIALS = ["<pad>", "<eos>", "<bos>"]


def char_tokenizer(vocab_size: int | None = None):
    """One token per printable ASCII character; with vocab_size, filler tokens "<|k|>" pad the vocabulary so
    that every id a randomly initialised model of that size samples decodes (benchmarks)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from .tokenizer import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    names = SPECIALS + chars
    if vocab_size is not None and vocab_size > len(names):
        names += [f"<|{k}|>" for k in range(vocab_size - len(names))]
    vocab = {tok: i for i, tok in enumerate(names)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )


FAMILIES = ("qwen2", "llama", "qwen3")


def tiny_model(
    vocab_size: int = 103,
    *,
    family: str = "qwen2",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    tie_word_embeddings: bool = True,
    max_position_embeddings: int = 1024,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """A randomly initialised causal LM of `family` (qwen2 | llama | qwen3)."""
    import transformers
    from transformers import AutoModelForCausalLM

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    # looked up by name: Qwen3Config exists only from transformers 4.51 on
    cls = getattr(
        transformers,
        {"qwen2": "Qwen2Config", "llama": "LlamaConfig", "qwen3": "Qwen3Config"}[family],
    )
    kw = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    if family == "qwen3":
        kw["head_dim"] = hidden_size // num_heads
    config = cls(**kw)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, **dtype_kwarg(dtype))
    return model
