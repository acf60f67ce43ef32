"""completions(): the final texts of many trackers decoded in one batch call are exactly what Tracker.completion
gives with its own tokenizer.decode, stop-string cut included, for real fast tokenizers (byte-level BPE with
special tokens and tokens holding half a UTF-8 character, the character tokenizer) and a non-HF one."""

import random
from importlib.resources import files

import pytest
from transformers import AutoTokenizer

from aha.models.tiny import char_tokenizer
from aha.models.tokenizer import PreTrainedTokenizerFast as Ours
from aha.models.tokenizer import load_tokenizer
from aha.rollout import SamplingParams
from aha.rollout.stops import Tracker, _decoder, completions, decode_all

TINY_BASE = str(files("aha") / "assets" / "tiny-base")


class ByteTok:
    """Not a transformers tokenizer: bytes per id, id 0 special (decode skips it)."""

    pieces = [b"<s>", b"a", b"b", b" ", b"\xc3", b"\xa9", b"User:", b"x"]

    def decode(self, ids, skip_special_tokens=True):
        parts = [self.pieces[i] for i in ids if not (skip_special_tokens and i == 0)]
        return b"".join(parts).decode("utf-8", errors="replace")

    def __len__(self):
        return len(self.pieces)


class ShoutingDecode(Ours):
    def decode(self, ids, **kw):
        return super().decode(ids, **kw).upper()


class Shouting_Decode(Ours):
    def _decode(self, token_ids, **kw):
        return super()._decode(token_ids, **kw).upper()


TOKENIZERS = {
    "bpe": lambda: load_tokenizer(TINY_BASE),  # ours, as training loads it
    "qwen2": lambda: AutoTokenizer.from_pretrained(TINY_BASE),  # transformers' Qwen2Tokenizer class
    "char": char_tokenizer,
    "bytes": ByteTok,
}


def run_trackers(tok, rng: random.Random, n: int = 24) -> list[Tracker]:
    """n finished trackers on random ids (special ones included), some cut by stop strings taken from the
    decoded text, some empty, fed in random chunks."""
    vocab = len(tok)
    out = []
    for i in range(n):
        ids = [rng.randrange(vocab) for _ in range(rng.choice([0, 1, 7, 200, 1500]))]
        text = tok.decode(ids, skip_special_tokens=True)
        at = rng.randrange(len(text) + 1)
        stop = tuple(s for s in (text[at : at + rng.randrange(1, 4)], "~~never~~") if s)
        params = SamplingParams(
            max_tokens=2000,
            stop=stop if rng.random() < 0.6 else (),
            include_stop_str_in_output=rng.random() < 0.5,
        )
        t = Tracker(i, params, tok)
        pos = 0
        while pos < len(ids) and not t.done:
            k = rng.randrange(1, 40)
            t.push(ids[pos : pos + k], [0.0] * len(ids[pos : pos + k]))
            pos += k
        out.append(t)
    return out


@pytest.mark.parametrize("name", list(TOKENIZERS))
@pytest.mark.parametrize("seed", range(3))
def test_completions_equal_one_completion_each(name, seed):
    tok = TOKENIZERS[name]()
    rng = random.Random(seed)
    trackers = run_trackers(tok, rng)
    prompt_indices = [rng.randrange(5) for _ in trackers]
    got = completions(trackers, prompt_indices)
    want = [t.completion(i) for t, i in zip(trackers, prompt_indices)]
    assert got == want
    assert sum(c.finish_reason == "stop" for c in got) >= 3  # the stop cut is exercised
    if name != "char":  # and half characters
        assert any("\ufffd" in c.text for c in got)


def test_decode_all_batches_only_where_it_is_exact(monkeypatch):
    rng = random.Random(0)
    for make in (TOKENIZERS["bpe"], TOKENIZERS["qwen2"], char_tokenizer):
        tok = make()
        seqs = [[rng.randrange(len(tok)) for _ in range(rng.randrange(0, 300))] for _ in range(16)]
        want = [tok.decode(s, skip_special_tokens=True) for s in seqs]
        monkeypatch.setattr(tok, "decode", None)  # the batch path never calls it
        assert decode_all(tok, seqs) == want
    # clean-up of spaces on, or a subclass with its own decode: one tokenizer.decode per sequence
    tok = load_tokenizer(TINY_BASE)
    tok.clean_up_tokenization_spaces = True
    calls = []
    real = tok.decode
    monkeypatch.setattr(tok, "decode", lambda ids, **kw: calls.append(ids) or real(ids, **kw))
    assert decode_all(tok, [[5, 6], [7]]) == [
        real(s, skip_special_tokens=True) for s in ([5, 6], [7])
    ]
    assert calls == [[5, 6], [7]]

    plain = load_tokenizer(TINY_BASE)
    seqs = [[rng.randrange(100, 300) for _ in range(50)] for _ in range(3)]
    want = [plain.decode(s, skip_special_tokens=True).upper() for s in seqs]
    assert want != [w.lower() for w in want]
    for cls in (ShoutingDecode, Shouting_Decode):
        assert decode_all(cls.from_pretrained(TINY_BASE), seqs) == want
        # the stop-string search's incremental decode follows the same rule (one check for both)
        assert [_decoder(cls.from_pretrained(TINY_BASE))(s) for s in seqs] == want
    assert completions([], []) == []
