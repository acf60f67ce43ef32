"""Random-weight Qwen2.5 architectures for the benchmarks (no download): the config.json values of the public
checkpoints, a model directory built from them, and a filler tokenizer whose every id decodes."""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = {  # transformers Qwen2Config values of the public Qwen2.5 checkpoints
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
               intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, tie_word_embeddings=True),
}  # fmt: skip


def build(arch: str, out: Path) -> Path:
    """A bf16 model directory of `arch` with random weights (initialised on the GPU when there is one) and the
    character tokenizer padded to the vocabulary. Reused when it exists."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from aha.models.tiny import char_tokenizer

    if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
        return out
    cfg = Qwen2Config(
        **ARCHS[arch],
        max_position_embeddings=32768,  # prompt + 16,384 new tokens
        rope_theta=1e6,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(cfg)
    model.to(torch.bfloat16).save_pretrained(out)
    char_tokenizer(cfg.vocab_size).save_pretrained(out)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def n_params(arch: str) -> int:
    from transformers import Qwen2Config

    from aha.train.memory_setup import shape_from_config

    return shape_from_config(Qwen2Config(**ARCHS[arch])).params
