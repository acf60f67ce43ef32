"""Token ids -> text for a streamed completion, and stop strings applied to a finished one.

`TextStream` turns the tokens of one completion, as the engine reports them, into text deltas a client may
be sent. Two rules keep the concatenated deltas a prefix of the final (non-streamed) text:
- Incremental decoding over a sliding window (vLLM's prefix/read offsets): the new text is
  decode(ids[prefix:]) minus decode(ids[prefix:read]), and it is taken only once it does not end in U+FFFD,
  so a character split over several byte-level tokens is sent whole. Decoding only a window keeps a long
  completion linear, and the window's first token keeps the next one's leading space.
- Stop strings: text that could be the beginning of a stop string is held back until the next tokens show
  it is not; once a stop string appears, nothing from it on is sent. The engine cuts the final text there.
`finish(final_text)` sends what is left of the engine's final text (whole_text: without a half character at a
max_tokens cut, in whole replies too).

`apply_limit` is the server's own cut, used when a completion ran past its request's max_tokens (requests
with different limits share one engine call, which runs to the largest) or an engine ignored stop strings:
it keeps the first `limit` tokens and cuts at the first stop token or stop string, like the engines do (the
stop string's text is dropped unless asked for; token ids keep the token that completed it).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..rollout.base import Completion


def decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def whole_text(c: Completion) -> str:
    """c's text without a character cut in half by max_tokens: byte-level tokens can end inside a character,
    whose bytes the decoder writes as U+FFFD; a stream never sends those, so neither does the whole reply."""
    return c.text.rstrip("\ufffd") if c.finish_reason == "length" else c.text


class TextStream:
    """The safe-to-send text of one completion, fed token ids as they are generated."""

    def __init__(self, tokenizer, stops: Sequence[str] = ()):
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.ids: list[int] = []
        self.prefix = self.read = 0  # window offsets into ids
        self.text = ""  # decoded so far, whole characters only
        self.sent = 0  # characters of self.text already handed out
        self.stopped = False  # a stop string was seen: hand out nothing more

    def push(self, new_ids: Sequence[int]) -> str:
        """Add generated ids; return the text that is now safe to send ("" if none)."""
        self.ids.extend(new_ids)
        before = decode(self.tokenizer, self.ids[self.prefix : self.read])
        after = decode(self.tokenizer, self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)
        return self._release()

    def _release(self) -> str:
        if self.stopped:
            return ""
        longest = max((len(s) for s in self.stops), default=0)
        start = max(0, self.sent - longest + 1)  # an occurrence may begin in text sent just before
        hits = [i for s in self.stops if (i := self.text.find(s, start)) >= 0]
        if hits:
            end, self.stopped = min(hits), True
        else:
            end = len(self.text) - _held(self.text, self.stops)
        end = max(end, self.sent)
        out, self.sent = self.text[self.sent : end], end
        return out

    def finish(self, final_text: str) -> str:
        """The rest of the engine's final text after what was sent (the whole of it if they disagree, which
        a tokenizer whose pieces do not concatenate could cause; nothing is sent twice only if they agree)."""
        sent = self.text[: self.sent]
        return final_text[len(sent) :] if final_text.startswith(sent) else ""


def _held(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of text that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """(start, string) of the stop string that starts first in text (ties: the one listed first)."""
    hits = [(i, k, s) for k, s in enumerate(stops) if s and (i := text.find(s)) >= 0]
    return min(hits)[::2] if hits else None


def apply_limit(
    comp: Completion,
    limit: int,
    tokenizer,
    stop_token_ids: Sequence[int] = (),
    stops: Sequence[str] = (),
    include_stop: bool = False,
) -> Completion:
    """`comp` cut to at most `limit` tokens and at its first stop token / stop string; finish_reason is
    "stop" for a cut at a stop, "length" for a cut at the limit; unchanged if neither applies."""
    ids = list(comp.token_ids)
    over = len(ids) > limit
    hit = first_stop(comp.text, stops)  # an engine that cut already leaves none (or one at the end)
    uncut = hit is not None and (not include_stop or hit[0] + len(hit[1]) < len(comp.text))
    if not over and not uncut and comp.finish_reason != "abort":
        return comp
    ids = ids[:limit]
    reason, stop = ("length" if over or len(ids) == limit else comp.finish_reason), None
    for t, tok in enumerate(ids):
        if tok in stop_token_ids:
            ids, reason, stop = ids[: t + 1], "stop", tok
            break
    text = decode(tokenizer, ids)
    if (hit := first_stop(text, stops)) is not None:
        at, stop = hit
        # the token that completes the stop string is the last one kept (its logprob stays aligned)
        ids = next(
            (ids[:t] for t in range(1, len(ids) + 1) if stop in decode(tokenizer, ids[:t])), ids
        )
        text, reason = text[: at + (len(stop) if include_stop else 0)], "stop"
    meta = dict(comp.meta)
    if isinstance(stop, str):  # as the engines do: stop strings only (stop ids are in token_ids)
        meta["stop"] = stop
    return Completion(
        prompt_index=comp.prompt_index,
        token_ids=ids,
        logprobs=list(comp.logprobs[: len(ids)]),
        text=text,
        finish_reason=reason,
        meta=meta,
    )
