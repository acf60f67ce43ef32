"""Write a tiny GGUF file the way llama.cpp's convert_hf_to_gguf.py does, from a tiny HF Llama and a byte-level
BPE trained here (no download): the tests load it through aha and compare with the HF model it came from.

llama.cpp stores q_proj/k_proj with the rows of each head interleaved for its rotary layout (`permute` below,
as in convert_hf_to_gguf.py's LlamaModel); transformers undoes it on load, so a wrong mapping shows as logits.
Some matrices are stored Q8_0 (blocks of 32 int8 + one scale) to exercise dequantization; the reference
model gets the same weights after a quantize -> dequantize round trip, so logits must agree to fp32 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2: pad/eos, bos, end of turn
CORPUS = [
    "What is 12 + 35? Show your work in <think> </think> tags and the answer in <answer> </answer>.",
    "<think> 12 + 35 = 47 </think> <answer> 47 </answer>",
    "A conversation between User and Assistant. The assistant solves it.",
] * 4


def byte_bpe(vocab_size: int = 300):
    """A byte-level BPE (`tokenizers.Tokenizer`) with SPECIALS first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: (n_head, 2, d/2, in) -> (n_head, d/2, 2, in)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def q8_roundtrip(w: torch.Tensor) -> torch.Tensor:
    from gguf import GGMLQuantizationType, dequantize, quantize

    q = quantize(w.numpy(), GGMLQuantizationType.Q8_0)
    return torch.from_numpy(dequantize(q, GGMLQuantizationType.Q8_0).copy()).reshape(w.shape)


def write_tiny_gguf(path, seed: int = 0):
    """-> (reference HF model whose weights equal what the file holds, the bare tokenizer) after writing
    a 2-layer Llama (hidden 64) with its tokenizer and chat template to `path`."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_bpe()
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    import json

    merges = [
        m if isinstance(m, str) else " ".join(m)
        for m in json.loads(tok.to_str())["model"]["merges"]
    ]
    cfg = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    ref = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():  # non-trivial norms too; Q8_0 on the MLPs
            p.copy_(torch.randn_like(p) * (0.2 if "norm" not in n else 0.1) + ("norm" in n))
            if "mlp." in n:
                p.copy_(q8_roundtrip(p))

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])  # 3 = CONTROL, 1 = NORMAL
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)  # an instruct model's end of turn, as SmolLM2's file says
    w.add_pad_token_id(0)
    w.add_add_bos_token(
        False
    )  # as SmolLM2's file says: transformers 4.x would prepend BOS otherwise
    w.add_add_space_prefix(False)
    w.add_chat_template(CHAT_TEMPLATE)

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in ref.state_dict().items()}
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
    }
    names["output.weight"] = "lm_head.weight"
    for i in range(cfg.num_hidden_layers):
        hf = f"model.layers.{i}."
        for g, h in [
            ("attn_norm", "input_layernorm"),
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("ffn_norm", "post_attention_layernorm"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
        ]:
            names[f"blk.{i}.{g}.weight"] = hf + h + ".weight"
    for g, h in names.items():
        a = sd[h]
        if ".attn_q." in g:
            a = permute(a, H)
        elif ".attn_k." in g:
            a = permute(a, KV)
        if "ffn_" in g and "norm" not in g:
            w.add_tensor(
                g,
                gguf.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
        else:
            w.add_tensor(g, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref, tok
