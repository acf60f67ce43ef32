"""Server JSON -> choice records (what the request cache stores) -> Completions.

A choice record is {"text", "finish_reason": "stop" | "length", "token_ids": [int] | None, "logprobs": [float] |
None} plus, when the server sends them, "prompt_token_ids" and "stop_reason" (vLLM: the stop string or stop
token id that ended the sample, null for EOS).

Chat: the reply's text is the message content; a reasoning model's reasoning, which DeepSeek's API returns in
`reasoning_content` and vLLM's reasoning parsers in `reasoning` (older vLLM: `reasoning_content`), is kept as
"<think>\\n{reasoning}\\n</think>\\n{content}", the R1 format aha's rewards and filters read.

Token ids: the server's when it returns them (vLLM with return_token_ids, aha serve), else the text re-encoded
with the tokenizer, plus the token the sample stopped on when that is known (vLLM's stop_reason; otherwise EOS
when the server says "stop" and no stop strings were asked for). meta["token_ids"] says which: "server" or
"text". Logprobs: the server's when they line up one-to-one with those tokens, else NaN, meta["logprobs"] False.
"""

from __future__ import annotations

import math

from ..base import Completion, SamplingParams

_MISSING = object()


def parse_choices(data: dict, api: str) -> list[dict]:
    """One response -> its choice records in index order. Raises KeyError/TypeError/ValueError if malformed."""
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if not choices:
        raise ValueError("no choices in the response")
    out = []
    for c in choices:
        if api == "completions":
            text = c["text"]
            lp = (c.get("logprobs") or {}).get("token_logprobs")
            prompt_ids = c.get("prompt_token_ids")
        else:
            msg = c["message"]
            text = _content(msg.get("content"))
            reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            if reasoning:
                text = f"<think>\n{reasoning}\n</think>\n{text}"
            content = (c.get("logprobs") or {}).get("content") or []
            lp = [t.get("logprob") for t in content] or None
            prompt_ids = data.get("prompt_token_ids")
        if not isinstance(text, str):
            raise TypeError(f"choice text is {type(text).__name__}, not a string")
        rec = {
            "text": text,
            "finish_reason": "length" if c.get("finish_reason") == "length" else "stop",
            "token_ids": c.get("token_ids"),
            "logprobs": lp,
        }
        if prompt_ids is not None:
            rec["prompt_token_ids"] = prompt_ids
        if "stop_reason" in c:
            rec["stop_reason"] = c["stop_reason"]
        out.append(rec)
    return out


def _content(content) -> str:
    """Message content: a string, or (newer servers) a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return content or ""


def to_completion(
    prompt_index: int, rec: dict, params: SamplingParams, tokenizer, source: str
) -> Completion:
    text, reason = rec["text"], rec["finish_reason"]
    ids = rec.get("token_ids")
    if ids is not None:
        origin = "server"
    else:
        origin = "text"
        ids = tokenizer(text, add_special_tokens=False).input_ids
        stop_id = _stop_token(rec, params, tokenizer)
        if stop_id is not None:
            ids = ids + [stop_id]
    lps = rec.get("logprobs")
    ok = (
        isinstance(lps, list)
        and len(lps) == len(ids)
        and all(isinstance(x, (int, float)) for x in lps)
    )
    meta = {"logprobs": ok, "token_ids": origin, "source": source}
    if rec.get("prompt_token_ids") is not None:
        meta["prompt_token_ids"] = list(rec["prompt_token_ids"])
    return Completion(
        prompt_index=prompt_index,
        token_ids=[int(t) for t in ids],
        logprobs=[float(x) for x in lps] if ok else [math.nan] * len(ids),
        text=text,
        finish_reason=reason,
        meta=meta,
    )


def _stop_token(rec: dict, params: SamplingParams, tokenizer) -> int | None:
    """The token a re-encoded sample ended on, when it is known; None when it ran out or stopped on a string."""
    if rec["finish_reason"] != "stop":
        return None
    why = rec.get("stop_reason", _MISSING)
    if isinstance(why, int) and not isinstance(why, bool):
        return why  # vLLM: this stop token id
    if isinstance(why, str):
        return None  # vLLM: a stop string, which is not a token
    if why is _MISSING and getattr(params, "stop", ()):
        return (
            None  # no stop_reason: EOS or one of the strings, we cannot tell; count no stop token
        )
    eos = tokenizer.eos_token_id
    if eos is None or (params.stop_token_ids and eos not in params.stop_token_ids):
        return None
    return eos
