"""Response bodies of `aha serve` in the OpenAI shapes (vLLM's extensions noted): choices, logprobs, chunks.

Choices always carry "token_ids" (the generated ids, the stop token included when one was hit; vLLM returns
them with return_token_ids) and "stop_reason" (the stop string or stop token id that ended the choice, None at
a length cut; vLLM's field). Logprobs: completions use the legacy shape {tokens, token_logprobs,
top_logprobs: [{token: logprob}], text_offset}, whose dicts hold the k alternatives and the sampled token;
chat uses {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}. Non-finite
logprobs are sent as -9999.0 (JSON has no -inf), as vLLM does.
"""

from __future__ import annotations

import json
import math
import time
import uuid

from .protocol import GenRequest
from .scheduler import Output
from .text import whole_text


class Formatter:
    def __init__(self, tokenizer, name: str, req: GenRequest):
        self.tokenizer, self.req = tokenizer, req
        self.id = f"{'chatcmpl' if req.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.head = {
            "id": self.id,
            "object": "chat.completion.chunk" if req.chat else "text_completion",
            "created": int(time.time()),
            "model": name,
        }

    # ---- whole responses ------------------------------------------------------------------------------------
    def response(self, outs: list[Output], prompts: list[list[int]], texts: list[str]) -> dict:
        choices = [self.choice(i, o, prompts, texts) for i, o in enumerate(outs)]
        obj = "chat.completion" if self.req.chat else "text_completion"
        return {**self.head, "object": obj, "choices": choices, "usage": usage(prompts, outs)}

    def choice(self, i: int, out: Output, prompts: list[list[int]], texts: list[str]) -> dict:
        c, r = out.completion, self.req
        prompt = prompts[c.prompt_index]
        extra = {"prompt_token_ids": prompt} if r.return_token_ids else {}
        end = {
            "finish_reason": "stop" if c.finish_reason == "stop" else "length",
            "stop_reason": self.stop_reason(c),
            "token_ids": list(c.token_ids),
        }
        if r.chat:
            msg = {"role": "assistant", "content": whole_text(c)}
            return {"index": i, "message": msg, "logprobs": self.logprobs(out), **end, **extra}
        text = (texts[c.prompt_index] if r.echo else "") + whole_text(c)
        return {"index": i, "text": text, "logprobs": self.logprobs(out, prompt), **end, **extra}

    def stop_reason(self, c) -> str | int | None:
        """vLLM's: the stop string, or a requested stop token id (None for EOS and at a length cut)."""
        if "stop" in c.meta:
            return c.meta["stop"]
        last = c.token_ids[-1] if c.token_ids else None
        return last if c.finish_reason == "stop" and last in self.req.stop_token_ids else None

    def logprobs(self, out: Output, prompt: list[int] = ()) -> dict | None:
        if self.req.logprobs is None:
            return None
        c = out.completion
        ids, lps = list(c.token_ids), list(c.logprobs)
        tops = out.top if out.top is not None else [[] for _ in ids]
        if self.req.chat:
            return {"content": [self._chat_entry(t, lp, top) for t, lp, top in zip(ids, lps, tops)]}
        if self.req.echo:  # the prompt's tokens first; the first has no logprob
            pl = out.prompt_logprobs or [None] * len(prompt)
            pt = out.prompt_top or [None] * len(prompt)
            ids, lps, tops = list(prompt) + ids, pl + lps, pt + tops
        toks = [self.tokenizer.decode([t]) for t in ids]
        offsets, at = [], 0  # into the returned text, which starts with the prompt under echo
        for s in toks:
            offsets.append(at)
            at += len(s)
        top_dicts = [
            None
            if lp is None
            else {
                **{self.tokenizer.decode([a]): _finite(v) for a, v in (top or [])},
                tok: _finite(lp),
            }
            for tok, lp, top in zip(toks, lps, tops)
        ]
        return {
            "tokens": toks,
            "token_logprobs": [None if lp is None else _finite(lp) for lp in lps],
            "top_logprobs": top_dicts,
            "text_offset": offsets,
        }

    def _chat_entry(self, tok: int, lp: float, top) -> dict:
        entry = self._tok(tok, lp)
        entry["top_logprobs"] = [self._tok(a, v) for a, v in top]
        return entry

    def _tok(self, tok: int, lp: float) -> dict:
        s = self.tokenizer.decode([tok])
        return {"token": s, "logprob": _finite(lp), "bytes": list(s.encode("utf-8"))}

    # ---- stream chunks --------------------------------------------------------------------------------------
    def chunk(
        self,
        i: int,
        text: str | None = None,
        *,
        role: bool = False,
        finish: Output | None = None,
        logprobs=None,
    ) -> str:
        if self.req.chat:
            delta = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            body = {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": None}
        else:
            body = {"index": i, "text": text or "", "logprobs": logprobs, "finish_reason": None}
        if finish is not None:
            c = finish.completion
            body["finish_reason"] = "stop" if c.finish_reason == "stop" else "length"
            body["stop_reason"] = self.stop_reason(c)
            body["token_ids"] = list(c.token_ids)
        return self.sse(
            {**self.head, "choices": [body], **({"usage": None} if self.req.include_usage else {})}
        )

    def usage_chunk(self, prompts: list[list[int]], outs: list[Output]) -> str:
        return self.sse({**self.head, "choices": [], "usage": usage(prompts, outs)})

    @staticmethod
    def sse(obj: dict) -> str:
        return f"data: {json.dumps(obj)}\n\n"


def usage(prompts: list[list[int]], outs: list[Output]) -> dict:
    p = sum(len(x) for x in prompts)
    c = sum(len(o.completion.token_ids) for o in outs)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -9999.0
