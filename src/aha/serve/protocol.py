"""Request parsing for `aha serve`: a JSON body -> a checked `GenRequest`, or an `ApiError` naming the field.

Every field is type- and range-checked here (NaN and infinities, bools posing as numbers, seeds beyond int64,
`stop=123` are 400s, not 500s later). Fields the server does not implement are a 400 naming them unless they
hold their neutral value (presence_penalty 0, logit_bias {}, tools [], ...); unknown fields are a 400 too, so
nothing a client asks for is silently ignored. Informational fields (user, metadata, ...) are accepted.
Errors have vLLM's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..schema import GREEDY_BELOW

INT64 = (-(2**63), 2**63 - 1)
MAX_LOGPROBS = 20

TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    413: "RequestTooLargeError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.message, self.status, self.param = message, status, param

    def body(self) -> dict:
        kind = TYPES.get(
            self.status, "BadRequestError" if self.status < 500 else "InternalServerError"
        )
        return {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": self.status,
            }
        }


# Not implemented; accepted only at the neutral values listed (None is always neutral).
NEUTRAL = {
    name: ok
    for ok, names in [
        ((0,), "frequency_penalty presence_penalty min_p min_tokens"),
        ((1,), "repetition_penalty typical_p length_penalty"),
        ((False,), "ignore_eos use_beam_search"),
        ((True,), "skip_special_tokens spaces_between_special_tokens"),
        (({},), "logit_bias"),
        (([],), "tools functions"),
        (("none", "auto"), "tool_choice function_call"),
        ((True, False), "parallel_tool_calls"),
        (("",), "suffix"),
        (({"type": "text"},), "response_format"),
        ((["text"],), "modalities"),
        (
            (),
            "prompt_logprobs truncate_prompt_tokens audio prediction reasoning_effort web_search_options",
        ),
        ((), "structured_outputs guided_json guided_regex guided_choice guided_grammar"),
    ]
    for name in names.split()
}
INFORMATIONAL = {"user", "metadata", "store", "service_tier", "request_id"}
COMMON = {
    "model", "n", "temperature", "top_p", "top_k", "max_tokens", "seed", "stop", "stop_token_ids",
    "include_stop_str_in_output", "stream", "stream_options", "return_token_ids", "logprobs",
    "add_special_tokens",
}  # fmt: skip
COMPLETION_FIELDS = COMMON | {"prompt", "echo", "best_of"}
CHAT_FIELDS = COMMON | {
    "messages", "max_completion_tokens", "top_logprobs", "add_generation_prompt",
    "continue_final_message", "chat_template_kwargs", "echo",
}  # fmt: skip


@dataclass
class GenRequest:
    chat: bool
    model: str | None = None
    prompts: list[str | list[int]] = field(default_factory=list)  # completions
    messages: list[dict] = field(default_factory=list)  # chat
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | None = None  # None: what fits in the context
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    logprobs: int | None = None  # None: not asked; k >= 0: the sampled token's and k alternatives
    return_token_ids: bool = False
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict = field(default_factory=dict)


def parse(body: Any, chat: bool) -> GenRequest:
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    _check_fields(body, CHAT_FIELDS if chat else COMPLETION_FIELDS)
    g = lambda k, d=None: d if body.get(k) is None else body[k]
    r = GenRequest(chat=chat)
    r.model = _str("model", g("model"), optional=True)
    r.n = _int("n", g("n", 1), 1, None)
    r.temperature = _num("temperature", g("temperature", 1.0), 0.0)
    # logits / 1e-40 overflow: as vLLM, such a temperature is greedy
    if r.temperature < GREEDY_BELOW:
        r.temperature = 0.0
    r.top_p = _num("top_p", g("top_p", 1.0), 0.0, 1.0, open_lo=True)
    top_k = _int("top_k", g("top_k", 0), -1, None)
    r.top_k = 0 if top_k == -1 else top_k  # vLLM spells "off" -1
    r.seed = None if g("seed") is None else _int("seed", body["seed"], *INT64)
    stop = g("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ApiError("'stop' must be a non-empty string or a list of them", param="stop")
    r.stop = tuple(dict.fromkeys(stop))
    ids = g("stop_token_ids", [])
    if not _is_ids(ids):
        raise ApiError("'stop_token_ids' must be a list of token ids", param="stop_token_ids")
    r.stop_token_ids = tuple(ids)
    for k in ("include_stop_str_in_output", "stream", "return_token_ids", "add_special_tokens"):
        setattr(r, k, _bool(k, g(k, getattr(r, k))))
    opts = g("stream_options")
    if opts is not None:
        if not r.stream:
            raise ApiError(
                "'stream_options' is only allowed with stream=true", param="stream_options"
            )
        if not isinstance(opts, dict) or set(opts) - {"include_usage", "continuous_usage_stats"}:
            raise ApiError("'stream_options' takes only include_usage", param="stream_options")
        if opts.get("continuous_usage_stats"):
            raise ApiError(
                "stream_options.continuous_usage_stats is not implemented", param="stream_options"
            )
        r.include_usage = _bool("stream_options.include_usage", opts.get("include_usage", False))
    return _parse_chat(body, r, g) if chat else _parse_completion(body, r, g)


def _parse_completion(body: dict, r: GenRequest, g) -> GenRequest:
    r.echo = _bool("echo", g("echo", False))
    if g("best_of") not in (None, r.n):
        raise ApiError("'best_of' is not implemented; leave it out or equal to n", param="best_of")
    r.max_tokens = (
        None if g("max_tokens") is None else _int("max_tokens", body["max_tokens"], 0, None)
    )
    if r.max_tokens == 0 and not r.echo:
        raise ApiError(
            "'max_tokens' must be >= 1 (0 only with echo, to score the prompt)", param="max_tokens"
        )
    if g("logprobs") is not None:
        r.logprobs = _int("logprobs", body["logprobs"], 0, MAX_LOGPROBS)
    p = body.get("prompt")
    if isinstance(p, str) or _is_ids(p, nonempty=True):
        r.prompts = [p]
    elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
        r.prompts = list(p)
    elif isinstance(p, list) and p and all(_is_ids(x, nonempty=True) for x in p):
        r.prompts = list(p)
    else:
        raise ApiError(
            "'prompt' must be a string, a list of strings, a list of token ids or a list of those",
            param="prompt",
        )
    return r


def _parse_chat(body: dict, r: GenRequest, g) -> GenRequest:
    r.add_special_tokens = _bool("add_special_tokens", g("add_special_tokens", False))
    if g("echo"):
        raise ApiError("'echo' is not implemented for chat; leave it out", param="echo")
    mt = g("max_completion_tokens", g("max_tokens"))
    name = "max_completion_tokens" if g("max_completion_tokens") is not None else "max_tokens"
    r.max_tokens = None if mt is None else _int(name, mt, 1, None)  # named as the client sent it
    top = g("top_logprobs")
    if _bool("logprobs", g("logprobs", False)):
        r.logprobs = 0 if top is None else _int("top_logprobs", top, 0, MAX_LOGPROBS)
    elif top:
        raise ApiError("'top_logprobs' needs logprobs=true", param="top_logprobs")
    for k in ("add_generation_prompt", "continue_final_message"):
        setattr(r, k, _bool(k, g(k, getattr(r, k))))
    kw = g("chat_template_kwargs", {})
    if not isinstance(kw, dict):
        raise ApiError("'chat_template_kwargs' must be an object", param="chat_template_kwargs")
    r.chat_template_kwargs = kw
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError("'messages' must be a non-empty list of {role, content}", param="messages")
    r.messages = [_message(m, i) for i, m in enumerate(msgs)]
    return r


ROLES = ("system", "developer", "user", "assistant")


def _message(m: Any, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise ApiError(f"{where} must be an object with a 'role'", param="messages")
    extra = [
        k for k, v in m.items() if k not in ("role", "content", "name") and v not in (None, [])
    ]
    if extra or m["role"] in ("tool", "function"):
        raise ApiError(
            f"{where}: tool calls are not implemented ({', '.join(extra) or m['role']})",
            param="messages",
        )
    if m["role"] not in ROLES:
        raise ApiError(
            f"{where}.role must be one of {', '.join(ROLES)}; got {m['role']!r}", param="messages"
        )
    role = "system" if m["role"] == "developer" else m["role"]
    content = m.get("content")
    # an assistant turn may be empty (a prefill to continue)
    if content is None and role != "assistant":
        raise ApiError(f"{where} ({role}) has no 'content'", param="messages")
    if content is None:
        content = ""
    elif isinstance(content, list):
        parts = []
        for part in content:
            if not (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(
                    f"{where}: only text content parts are supported, got {kind!r}",
                    param="messages",
                )
            parts.append(part["text"])
        content = "\n".join(parts)
    elif not isinstance(content, str):
        raise ApiError(
            f"{where}.content must be a string or a list of text parts", param="messages"
        )
    out = {"role": role, "content": content}
    if isinstance(m.get("name"), str):
        out["name"] = m["name"]
    return out


def _check_fields(body: dict, known: set[str]) -> None:
    unknown = sorted(
        k for k in body if k not in known and k not in NEUTRAL and k not in INFORMATIONAL
    )
    if unknown:
        raise ApiError(
            f"unknown field(s): {', '.join(unknown)}; see the aha serve docs for the fields it takes",
            param=unknown[0],
        )
    bad = [
        k
        for k, ok in NEUTRAL.items()
        if k in body and body[k] is not None and not _neutral(body[k], ok)
    ]
    if bad:
        raise ApiError(
            f"not implemented by aha serve: {', '.join(bad)}; leave them out or at their neutral value",
            param=bad[0],
        )


def _neutral(v: Any, ok: tuple) -> bool:
    if isinstance(v, bool) and not any(isinstance(o, bool) for o in ok):
        return False  # True == 1 must not pass for repetition_penalty
    return v in ok


def _is_ids(v: Any, nonempty: bool = False) -> bool:
    return isinstance(v, list) and (v or not nonempty) and all(type(x) is int for x in v)


def _str(name: str, v: Any, optional: bool = False) -> str | None:
    if (v is None and optional) or isinstance(v, str):
        return v
    raise ApiError(f"'{name}' must be a string", param=name)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ApiError(f"'{name}' must be true or false, got {v!r}", param=name)
    return v


def _int(name: str, v: Any, lo: int | None, hi: int | None) -> int:
    if type(v) is float and v.is_integer():
        v = int(v)
    if type(v) is not int or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ApiError(f"'{name}' must be an integer {rng}, got {_show(v)}", param=name)
    return v


def _num(name: str, v: Any, lo: float, hi: float | None = None, open_lo: bool = False) -> float:
    try:
        ok = type(v) in (int, float) and math.isfinite(v)
    except OverflowError:  # an int beyond float's range
        ok = False
    ok = ok and (v > lo if open_lo else v >= lo) and (hi is None or v <= hi)
    if not ok:
        rng = f"{'>' if open_lo else '>='} {lo}" + ("" if hi is None else f" and <= {hi}")
        raise ApiError(f"'{name}' must be a finite number {rng}, got {_show(v)}", param=name)
    return float(v)


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."
