"""`aha serve MODEL [key=value ...]`: our engine behind the OpenAI API, on localhost, over real HTTP.

    POST /v1/completions        prompt: str | [str] | [int] | [[int]]; max_tokens (16), temperature (1), top_p,
                                top_k, n, seed, stop (str | [str]), stop_token_ids, logprobs
    POST /v1/chat/completions   messages (rendered with the tokenizer's chat template, or chat_template=...),
                                max_tokens (default_max_tokens), temperature, top_p, top_k, n, seed, stop, logprobs
    GET  /v1/models, /health

Each choice also carries "token_ids" (the generated ids, the stop token included when one was hit), so
OpenAIEngine gets exact tokens and logprobs from us. Streaming, echo and best_of are refused with a 400.

Concurrent requests are batched: one worker thread takes a request, waits `batch_window_ms` for others with
the same sampling settings, and runs them in one engine.generate call. Seeded requests run alone, so their
samples do not depend on what else was in flight (serve_batcher.py). It is a test and teaching server, not a
vLLM replacement.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

from .config import check
from .rollout.base import Completion, SamplingParams
from .serve_batcher import Batcher


@dataclass
class ServeConfig:
    model: str = "tiny-base"  # local HF directory, hub id, tiny-base, tiny-recheck or tiny-random
    name: str = ""  # model name the API reports and accepts ("" = the model argument)
    host: str = "127.0.0.1"
    port: int = 8000  # 0 = any free port (printed)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    engine: Literal["auto", "hf", "fast"] = "auto"
    chat_template: str | None = None  # Jinja string or file, for tokenizers that have none
    default_max_tokens: int = 1024  # chat requests without max_tokens
    batch_window_ms: float = 5.0
    max_batch_prompts: int = 64

    def __post_init__(self):
        check(0 <= self.port < 65536, "port", f"must be in [0, 65535], got {self.port}")
        check(self.default_max_tokens >= 1, "default_max_tokens", "must be >= 1")
        check(self.max_batch_prompts >= 1, "max_batch_prompts", "must be >= 1")


class RequestError(ValueError):
    """A bad request: answered with HTTP 400 and this message."""


class AhaServer:
    """The HTTP server; `with AhaServer(engine, tok, name) as s: s.url` serves in a background thread."""

    def __init__(
        self,
        engine,
        tokenizer,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        chat_template: str | None = None,
        default_max_tokens: int = 1024,
        batch_window_ms: float = 5.0,
        max_batch_prompts: int = 64,
    ):
        self.tokenizer, self.name, self.default_max_tokens = tokenizer, name, default_max_tokens
        if chat_template and Path(chat_template).is_file():
            chat_template = Path(chat_template).read_text()
        self.chat_template = chat_template
        self.batcher = Batcher(engine, batch_window_ms, max_batch_prompts)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # quiet: one line per request is noise in tests
                pass

            def do_GET(self):
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._send(
                        200,
                        {
                            "object": "list",
                            "data": [{"id": server.name, "object": "model", "owned_by": "aha"}],
                        },
                    )
                elif self.path.rstrip("/") == "/health":
                    self._send(200, {"status": "ok"})
                else:
                    self._send(404, _error(f"no route GET {self.path}; try /v1/models"))

            def do_POST(self):
                route = self.path.rstrip("/")
                try:
                    body = json.loads(
                        self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"
                    )
                    if not isinstance(body, dict):
                        raise RequestError("the request body must be a JSON object")
                    if route in ("/v1/completions", "/completions"):
                        self._send(200, server.completions(body))
                    elif route in ("/v1/chat/completions", "/chat/completions"):
                        self._send(200, server.chat(body))
                    else:
                        self._send(
                            404,
                            _error(
                                f"no route POST {self.path}; use /v1/completions or /v1/chat/completions"
                            ),
                        )
                except (RequestError, json.JSONDecodeError) as e:
                    self._send(400, _error(str(e)))
                except Exception as e:
                    self._send(500, _error(f"{type(e).__name__}: {e}", "server_error"))

            def _send(self, code: int, obj: dict):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/v1"
        self._thread: threading.Thread | None = None

    # ---- endpoints -------------------------------------------------------------------------------------------
    def completions(self, body: dict) -> dict:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(x, int) for x in prompt):
            prompts = [prompt]
        elif (
            isinstance(prompt, list) and prompt and all(isinstance(x, (str, list)) for x in prompt)
        ):
            prompts = prompt
        else:
            raise RequestError(
                "'prompt' must be a string, a list of strings, a list of token ids or a list of those"
            )
        ids = [
            p if isinstance(p, list) else self.tokenizer(p, add_special_tokens=False).input_ids
            for p in prompts
        ]
        choices, usage = self._generate(ids, body, default_max=16)
        for c in choices:
            if body.get("logprobs") is not None:
                c["logprobs"] = {
                    "tokens": [self.tokenizer.decode([t]) for t in c["token_ids"]],
                    "token_logprobs": c.pop("_logprobs"),
                    "top_logprobs": None,
                }
            else:
                c["logprobs"] = None
                c.pop("_logprobs")
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": usage,
        }

    def chat(self, body: dict) -> dict:
        msgs = body.get("messages")
        if (
            not isinstance(msgs, list)
            or not msgs
            or not all(isinstance(m, dict) and "role" in m for m in msgs)
        ):
            raise RequestError("'messages' must be a non-empty list of {role, content} objects")
        template = self.chat_template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise RequestError(
                f"model '{self.name}' has no chat template; use /v1/completions, or start aha serve "
                "with chat_template=FILE"
            )
        text = self.tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=True, chat_template=template
        )
        ids = [self.tokenizer(text, add_special_tokens=False).input_ids]
        choices, usage = self._generate(ids, body, default_max=self.default_max_tokens)
        out = []
        for c in choices:
            lp = c.pop("_logprobs")
            out.append(
                {
                    "index": c["index"],
                    "message": {"role": "assistant", "content": c["text"]},
                    "finish_reason": c["finish_reason"],
                    "token_ids": c["token_ids"],
                    "logprobs": {
                        "content": [
                            {"token": self.tokenizer.decode([t]), "logprob": v}
                            for t, v in zip(c["token_ids"], lp)
                        ]
                    }
                    if body.get("logprobs")
                    else None,
                }
            )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": out,
            "usage": usage,
        }

    def _generate(
        self, ids: list[list[int]], body: dict, default_max: int
    ) -> tuple[list[dict], dict]:
        for key in ("stream", "echo"):
            if body.get(key):
                raise RequestError(f"'{key}' is not supported by aha serve; leave it out")
        if body.get("best_of") not in (None, 1, body.get("n", 1)):
            raise RequestError("'best_of' is not supported by aha serve; leave it out")
        if body.get("model") not in (None, self.name):
            raise RequestError(
                f"model '{body.get('model')}' is not served here; this server serves '{self.name}'"
            )
        if any(len(p) == 0 for p in ids):
            raise RequestError("empty prompt; give at least one token")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        eos = self.tokenizer.eos_token_id
        stop_ids = list(body.get("stop_token_ids") or []) + ([eos] if eos is not None else [])
        try:
            params = SamplingParams(
                n=int(body.get("n", 1)),
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                top_k=int(body.get("top_k") or 0),
                max_tokens=int(
                    body.get("max_tokens") or body.get("max_completion_tokens") or default_max
                ),
                stop_token_ids=list(dict.fromkeys(stop_ids)),
                seed=None if body.get("seed") is None else int(body["seed"]),
            )
        except (TypeError, ValueError) as e:
            raise RequestError(str(e)) from None
        comps = self.batcher.submit(ids, params)
        choices = []
        for k, c in enumerate(comps):
            toks, lps, text, reason = _apply_stop_strings(c, stop, self.tokenizer)
            choices.append(
                {
                    "index": k,
                    "text": text,
                    "finish_reason": reason,
                    "token_ids": toks,
                    "_logprobs": lps,
                }
            )
        usage = {
            "prompt_tokens": sum(len(p) for p in ids),
            "completion_tokens": sum(len(c["token_ids"]) for c in choices),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return choices, usage

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> AhaServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), daemon=True, name="aha-serve-http"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.batcher.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _apply_stop_strings(c: Completion, stop: list[str], tokenizer):
    """Cut the completion before the first stop string (OpenAI semantics: the stop string is not returned);
    tokens are kept up to the first one whose decoded prefix contains it."""
    hits = [(c.text.find(s), s) for s in stop if s and s in c.text]
    if not hits:
        return list(c.token_ids), list(c.logprobs), c.text, c.finish_reason
    cut = min(h for h, _ in hits)
    for t in range(1, len(c.token_ids) + 1):
        if len(tokenizer.decode(c.token_ids[:t], skip_special_tokens=True)) > cut:
            return list(c.token_ids[:t]), list(c.logprobs[:t]), c.text[:cut], "stop"
    return list(c.token_ids), list(c.logprobs), c.text[:cut], "stop"


def _error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind}}


def cmd_serve(args: list[str]) -> int:
    """`aha serve MODEL [port=8000 host=127.0.0.1 ...]`: serve until Ctrl-C / SIGTERM."""
    from .cli_args import UsageError, split_args
    from .config import load_config
    from .models.load import load_model
    from .rollout.factory import make_engine

    model, overrides = split_args(args)
    if model is None:
        raise UsageError("usage: aha serve MODEL [port=8000 host=127.0.0.1 name=NAME ...]")
    cfg = load_config(ServeConfig, None, [f"model={model}", *overrides])
    m, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    m.eval()
    server = AhaServer(
        make_engine(cfg.engine, m, tok),
        tok,
        cfg.name or cfg.model,
        host=cfg.host,
        port=cfg.port,
        chat_template=cfg.chat_template,
        default_max_tokens=cfg.default_max_tokens,
        batch_window_ms=cfg.batch_window_ms,
        max_batch_prompts=cfg.max_batch_prompts,
    )
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    server.start()
    print(f"serving {cfg.model} as '{server.name}' at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return 0
