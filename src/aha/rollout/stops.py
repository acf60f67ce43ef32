"""The host side of one completion, shared by every engine: stop ids, stop strings, streaming and abort.

`Tracker.push(tokens)` takes a completion's new tokens in order (one per HF step, a few per FastEngine sync
round) and applies the rules of aha.rollout.base in one place, so the engines cut at the same token:
the first stop id ends the completion; else the first token after which the decoded text contains a stop
string; the kept tokens go to `on_tokens`, which may abort; max_tokens ends it by length.

Stop strings are searched in text decoded incrementally (the prefix-offset scheme of TGI and vLLM): only the
last few ids are decoded per call; a tail ending in U+FFFD (an incomplete UTF-8 sequence) is searched as is
(decode(ids) shows it so) but kept in the window until its character completes. A chunk of tokens is decoded at once; only when a stop string shows up in it is the
chunk replayed token by token to find the completing token. The final text is `decode(token_ids)` cut at the
first stop string in it (with the incremental text as the fallback for a tokenizer whose decode is not
prefix-stable). `completions(trackers, ...)` decodes all the final texts in one batch call.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Completion, OnTokens, SamplingParams


def first_match(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """(start, string) of the stop string that starts first in text (ties: the one listed first)."""
    best = None
    for s in stops:
        at = text.find(s)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, s)
    return best


def _exact_backend(tokenizer):
    """The Rust backend where its decode gives exactly tokenizer.decode(ids, skip_special_tokens=True): a
    transformers fast tokenizer without clean-up of spaces whose decode and _decode are transformers' own; else
    None."""
    from transformers import PreTrainedTokenizerFast as Fast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    cls = type(tokenizer)
    if (
        backend is not None
        and not getattr(tokenizer, "clean_up_tokenization_spaces", True)
        and getattr(cls, "decode", None) is Fast.decode
        and getattr(cls, "_decode", None) is Fast._decode
    ):
        return backend
    return None


def _decoder(tokenizer):
    """decode(ids) -> text with special tokens skipped: the exact Rust backend's decode (~3x less per call),
    else tokenizer.decode."""
    backend = _exact_backend(tokenizer)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def decode_all(tokenizer, seqs: list[list[int]]) -> list[str]:
    """[tokenizer.decode(ids, skip_special_tokens=True) for ids in seqs], in one decode_batch call of the exact
    Rust backend (which decodes the sequences in parallel threads) where there is one."""
    backend = _exact_backend(tokenizer)
    if backend is not None:
        return backend.decode_batch(seqs, skip_special_tokens=True)
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in seqs]


class StopText:
    """Incremental detokenisation of one completion and the stop-string search over the new text.

    The window ids[prefix:] is decoded per call and compared with the window's previous text (cached, so one
    decode a call); prefix moves up to the last committed point once the window exceeds WINDOW ids."""

    WINDOW = 16

    def __init__(self, tokenizer, stops: tuple[str, ...]):
        self.decode, self.stops = _decoder(tokenizer), stops
        self.tail_len = max(len(s) for s in stops) - 1  # chars of old text a new match can start in
        self.ids: list[int] = []
        self.prefix = self.read = 0  # ids[prefix:read] is the window already turned into text
        self.window: str | None = ""  # decode(ids[prefix:read]), None when not computed yet
        self.text = ""
        self.match: tuple[int, str] | None = None  # (start in self.text, string) once one completed
        self.commit = False

    def _delta(self) -> str:
        """Text the ids after `read` add, decoding only ids[prefix:]. It is committed (read moves on)
        unless it ends in U+FFFD; uncommitted text is still searched, as decode(ids) would show it."""
        if self.window is None:
            self.window = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) <= len(self.window):
            return ""
        delta = after[len(self.window) :]
        self.commit = not after.endswith("\ufffd")
        if self.commit:
            last, self.read, self.window = self.read, len(self.ids), after
            if self.read - self.prefix > self.WINDOW:  # keep the last chunk as context (TGI, vLLM)
                self.prefix, self.window = last, None
        return delta

    def _search(self, delta: str) -> tuple[int, str] | None:
        """A stop string that ends inside delta (appended to self.text), with its start in the full text."""
        if not delta:
            return None
        tail = self.text[max(0, len(self.text) - self.tail_len) :]
        hit = first_match(tail + delta, self.stops)
        return None if hit is None else (len(self.text) - len(tail) + hit[0], hit[1])

    def _step(self, new: list[int]) -> tuple[int, str] | None:
        self.ids.extend(new)
        self.commit = False
        delta = self._delta()
        hit = self._search(delta)
        if self.commit or hit is not None:
            self.text += delta
        return hit

    def feed(self, new: list[int]) -> int | None:
        """Append tokens; returns how many of them to keep when a stop string completes among them."""
        saved = (len(self.ids), self.prefix, self.read, self.window, len(self.text))
        if self._step(new) is None:
            return None
        n0, self.prefix, self.read, self.window, n_text = saved  # replay: which token completes it
        del self.ids[n0:]
        self.text = self.text[:n_text]
        for j, t in enumerate(new):
            hit = self._step([t])
            if hit is not None:
                self.match = hit
                return j + 1
        return None  # decode(chunk) and decode token by token disagree: no stop


class Tracker:
    """Tokens, logprobs and finish state of completion `index`; `push` is the only way tokens come in."""

    def __init__(
        self, index: int, params: SamplingParams, tokenizer=None, on_tokens: OnTokens | None = None
    ):
        self.index, self.params, self.tokenizer, self.on_tokens = (
            index,
            params,
            tokenizer,
            on_tokens,
        )
        if params.stop and tokenizer is None:
            raise ValueError(
                "SamplingParams.stop needs the engine's tokenizer (engine built without one)"
            )
        self.stop_ids = frozenset(params.stop_token_ids)
        self.text = StopText(tokenizer, params.stop) if params.stop else None
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.reason: str | None = None  # None while it runs; then "stop" | "length" | "abort"

    @property
    def done(self) -> bool:
        return self.reason is not None

    def push(self, tokens: list[int], logprobs: list[float] | None = None) -> None:
        """New tokens of this completion, in order (ignored once it is done)."""
        if self.done or not tokens:
            return
        keep = min(len(tokens), self.params.max_tokens - len(self.ids))
        if self.stop_ids:
            for j, tok in enumerate(tokens[:keep]):
                if tok in self.stop_ids:
                    keep, self.reason = j + 1, "stop"
                    break
        if self.text is not None:
            cut = self.text.feed(tokens[:keep])
            if cut is not None:
                keep, self.reason = cut, "stop"
        tokens = tokens[:keep]
        self.ids += tokens
        if logprobs is not None:
            self.logprobs += logprobs[:keep]
        if self.reason is None and len(self.ids) >= self.params.max_tokens:
            self.reason = "length"
        if self.on_tokens is not None and tokens:
            if self.on_tokens(self.index, list(tokens)) is False and self.reason is None:
                self.reason = "abort"

    def completion(self, prompt_index: int, decoded: str | None = None) -> Completion:
        """The finished Completion (a tracker still running counts as cut by length). `decoded`: the text
        of self.ids when the caller has it already (completions() decodes them all in one call)."""
        text, meta = "", {}
        if self.tokenizer is not None:
            text = decoded
            if text is None:
                text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if self.text is not None and self.text.match is not None:
            hit = first_match(text, self.params.stop)
            if (
                hit is None
            ):  # decode is not prefix-stable for this tokenizer: cut the incremental text
                text, hit = self.text.text, self.text.match
            at, s = hit
            text = text[: at + len(s)] if self.params.include_stop_str_in_output else text[:at]
            meta["stop"] = s
        return Completion(
            prompt_index=prompt_index,
            token_ids=list(self.ids),
            logprobs=list(self.logprobs),
            text=text,
            finish_reason=self.reason or "length",
            meta=meta,
        )


def completions(trackers: Sequence[Tracker], prompt_indices: Sequence[int]) -> list[Completion]:
    """[t.completion(i) for t, i in zip(trackers, prompt_indices)], the texts decoded in one batch call."""
    tok = trackers[0].tokenizer if trackers else None
    texts: list[str | None] = [None] * len(trackers)
    if tok is not None and all(t.tokenizer is tok for t in trackers):
        texts = decode_all(tok, [t.ids for t in trackers])
    return [
        t.completion(i, text) for t, i, text in zip(trackers, prompt_indices, texts, strict=True)
    ]
