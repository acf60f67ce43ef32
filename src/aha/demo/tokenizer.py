"""A small byte-level BPE tokenizer trained on the demo corpus with the `tokenizers` library.

The pre-tokenizer and normalizer are exactly Qwen2's (its split regex, NFC, byte-level). That is not a
style choice: transformers >= 5 loads the tokenizer of any `model_type: qwen2` checkpoint as Qwen2Tokenizer,
which rebuilds the pre-tokenizer from that regex whatever tokenizer.json says; a different split at training
time would make `AutoTokenizer` encode differently from what the model was trained on (measured: numbers
came out as " ", "3", "7" instead of " 3", "7", and the model's outputs were garbage). With Qwen2's split,
numbers are spelt one digit per token (" 37" -> " ", "3", "7"), which is what makes arithmetic learnable,
and words keep their leading space and merge into whole-word tokens, so the R1-Zero template stays short.
Byte-level BPE encodes any text, so the template and its <think>/<answer> tags (absent from the corpus)
still encode, into a few pieces each (" <", "th", "in", "k", ">").

Special tokens: <|pad|> = 0 and <|endoftext|> = 1 (end of every document, the eos of generation). Nothing
is added automatically when encoding (no bos), so prompts encode exactly as their text.
"""
from __future__ import annotations

from collections.abc import Iterable

PAD, EOS = "<|pad|>", "<|endoftext|>"
# transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX, copied so training matches loading.
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """Train a byte-level BPE on `texts`; returns a transformers PreTrainedTokenizerFast (pad 0, eos 1)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + 2:
        raise ValueError(f"vocab_size must be >= 258 (256 bytes + pad + eos), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   clean_up_tokenization_spaces=False)
