"""The tiny model's tokenizer: a byte-level BPE (a `tokenizers` BPE model) whose merges only grow words
that start with a space, learned from the demo corpus.

Pre-tokenizer and normalizer are exactly Qwen2's (its split regex, NFC, byte-level). Not a style choice:
transformers >= 5 loads the tokenizer of any `model_type: qwen2` checkpoint as Qwen2Tokenizer, which rebuilds
the pre-tokenizer from that regex whatever tokenizer.json says; any other split at training time makes
`AutoTokenizer` encode differently from what the model saw (measured: numbers came out as " ", "3", "7"
instead of " 3", "7", and the model's outputs were garbage). Under that split a number is one digit per
token (" 37" -> " ", "3", "7"), which keeps arithmetic learnable.

Merges are left-anchored: every merge extends a piece that starts with a space by one character (" t" ->
" th" -> " thi" ...), most frequent first, which is BPE restricted to merges whose left side starts the
piece. So " answer" and " reasoning" are single tokens (the R1-Zero template is ~140 tokens), while a piece
without a leading space -- a tag name after "<" or "</" -- stays one token per letter. That is what lets the
model copy unseen tag names: the corpus states random tag names that the model must copy letter by letter,
and "think"/"answer" are just more letters. Plain BpeTrainer merges letters inside words too, so "<answer>"
came out as "an", "swer", and "swer" never occurs on its own in the corpus: an untrained embedding the model
could not copy (measured: format rate 0% under the R1-Zero template; letter-level tags: 87%).

Special tokens: <|pad|> = 0 and <|endoftext|> = 1 (end of every document, the eos of generation). Nothing is
added when encoding (no bos), so prompts encode exactly as their text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

PAD, EOS = "<|pad|>", "<|endoftext|>"
SPACE = "\u0120"  # "Ġ", the byte-level form of " "
# transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX, copied so training matches loading.
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _pipeline():
    from tokenizers import Regex, normalizers, pre_tokenizers

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return normalizers.NFC(), pre


def left_anchored_merges(piece_counts: Counter, budget: int) -> list[tuple[str, str]]:
    """BPE restricted to merges (head, next char), head a growing prefix of a space-led piece.

    Each round merges the (prefix, next character) pair with the largest total count over all pieces whose
    current head is that prefix; stops after `budget` merges or when every piece is one token.
    """
    heads = {w: 1 for w in piece_counts}  # length of each piece's merged head
    merges: list[tuple[str, str]] = []
    while len(merges) < budget:
        pairs: Counter = Counter()
        for w, c in piece_counts.items():
            if heads[w] < len(w):
                pairs[w[: heads[w] + 1]] += c
        if not pairs:
            break
        grown = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[
            0
        ]  # ties by string: deterministic
        merges.append((grown[:-1], grown[-1]))
        for w in piece_counts:
            if heads[w] == len(grown) - 1 and w.startswith(grown):
                heads[w] += 1
    return merges


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """Learn the tokenizer from `texts`; returns a PreTrainedTokenizerFast (pad 0, eos 1) of at most
    `vocab_size` tokens (fewer when every space-led word of the corpus is already one token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from ..models.tokenizer import PreTrainedTokenizerFast  # saves a class transformers 4.x loads

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < len(alphabet) + 2:
        raise ValueError(
            f"vocab_size must be >= {len(alphabet) + 2} (256 bytes + pad + eos), got {vocab_size}"
        )
    norm, pre = _pipeline()
    counts: Counter = Counter()
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            if piece.startswith(SPACE) and len(piece) > 1:
                counts[piece] += 1
    merges = left_anchored_merges(counts, vocab_size - len(alphabet) - 2)
    vocab = {tok: i for i, tok in enumerate([PAD, EOS] + alphabet + [a + b for a, b in merges])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = norm, pre, decoders.ByteLevel()
    tok.add_special_tokens([PAD, EOS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, clean_up_tokenization_spaces=False
    )
