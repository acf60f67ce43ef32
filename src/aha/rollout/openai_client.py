"""OpenAIEngine: the Engine protocol over any OpenAI-compatible server (vLLM, SGLang, a hosted API, `aha serve`).

    engine = OpenAIEngine("http://127.0.0.1:8000/v1", "my-teacher", tokenizer, concurrency=16,
                          cache_path="runs/traces/requests.jsonl")
    completions = engine.generate(prompt_ids, SamplingParams(n=4, temperature=0.7, max_tokens=2048, seed=0))

One HTTP request per prompt (asking for its n samples), `concurrency` requests in flight, each with a timeout;
connection errors, timeouts, 408/409/429 and 5xx are retried with exponential backoff (full jitter, honouring
Retry-After) up to `max_retries` times; any other error stops the call with the server's message.

api="completions" sends the prompt text (decoded from the ids with `tokenizer`, or the ids themselves with
send_token_ids=True, which vLLM/SGLang/aha serve accept). api="chat" sends the prompt text as one user message
(so render prompts with a bare "{prompt}" template) and a reasoning_content field, when the server splits one
off, is put back as "<think>\n...\n</think>\n" before the answer.

Token ids: the server's when it returns them (choice["token_ids"], as aha serve and recent vLLM do), else the
text re-encoded with `tokenizer` (+ eos when the server stopped on its own). Logprobs: the server's when they
line up with those tokens, else NaN with meta["logprobs"] = False -- fine for teacher traces, not for RL.

Resumable output: with cache_path, every finished request is appended (and fsynced) to a JSONL cache keyed by
a hash of (url, payload, occurrence number of that payload in this engine's life). A run that crashes mid-call
and restarts with the same calls gets the finished requests from the cache: nothing regenerated or duplicated.
Unseeded identical requests within one run still get fresh samples (the occurrence number differs).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from .base import Completion, SamplingParams

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
APIS = ("completions", "chat")


class OpenAIError(RuntimeError):
    """A request that failed for good: one line with the URL, the status and the server's message."""


class OpenAIEngine:
    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer,
        *,
        api: str = "completions",
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        send_token_ids: bool = False,
        vllm_extensions: bool = True,
        system: str | None = None,
        cache_path: str | Path | None = None,
        extra_body: dict | None = None,
    ):
        if api not in APIS:
            raise ValueError(f"unknown api {api!r}; valid: {', '.join(APIS)}")
        if concurrency < 1 or timeout <= 0 or max_retries < 0:
            raise ValueError(
                "OpenAIEngine needs concurrency >= 1, timeout > 0 and max_retries >= 0"
            )
        self.url = base_url.rstrip("/") + (
            "/completions" if api == "completions" else "/chat/completions"
        )
        self.model, self.tokenizer, self.api, self.api_key = model, tokenizer, api, api_key
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.send_token_ids, self.vllm_extensions, self.system = (
            send_token_ids,
            vllm_extensions,
            system,
        )
        self.extra_body = dict(extra_body or {})
        self.cache_path = Path(cache_path) if cache_path else None
        self._cache = _read_cache(self.cache_path) if self.cache_path else {}
        self._seen: Counter = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self.stats = Counter()  # requests, retries, cache_hits

    # ---- the Engine call -------------------------------------------------------------------------------------
    def generate(
        self, prompt_token_ids: list[list[int]], params: SamplingParams
    ) -> list[Completion]:
        if not prompt_token_ids or any(len(p) == 0 for p in prompt_token_ids):
            raise ValueError("generate() needs a non-empty list of non-empty prompts")
        payloads = [self._payload(ids, params, i) for i, ids in enumerate(prompt_token_ids)]
        keys = []
        for p in payloads:  # occurrence-numbered keys, assigned in call order
            base = hashlib.sha256(json.dumps([self.url, p], sort_keys=True).encode()).hexdigest()
            self._seen[base] += 1
            keys.append(f"{base}:{self._seen[base]}")
        results: list[list[dict] | None] = [self._cache.get(k) for k in keys]
        self.stats["cache_hits"] += sum(r is not None for r in results)
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:

            def run(i: int) -> list[dict]:  # cached as soon as it lands: a crash keeps it
                choices = self._request(payloads[i])
                self._store(keys[i], choices)
                return choices

            pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo)))
            try:
                futures = {pool.submit(run, i): i for i in todo}
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    raise failed[0].exception()
                for f, i in futures.items():
                    results[i] = f.result()
            finally:  # queued requests are dropped; those in flight finish (and are cached) first
                pool.shutdown(wait=True, cancel_futures=True)
        out = []
        for i, choices in enumerate(results):
            if len(choices) != params.n:
                raise OpenAIError(
                    f"{self.url} returned {len(choices)} choices for n={params.n}; use a server "
                    "that supports n"
                )
            out.extend(self._completion(i, c, params) for c in choices)
        return out

    def _payload(self, ids: list[int], params: SamplingParams, i: int) -> dict:
        p = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
        }
        if params.seed is not None:
            p["seed"] = params.seed + i  # distinct, reproducible streams per prompt
        if params.top_k:
            if not self.vllm_extensions:
                raise ValueError(
                    "top_k is not part of the OpenAI API; set top_k=0 or vllm_extensions=True"
                )
            p["top_k"] = params.top_k
        if params.stop_token_ids and self.vllm_extensions:
            p["stop_token_ids"] = list(params.stop_token_ids)
        if self.api == "completions":
            p["prompt"] = list(ids) if self.send_token_ids else self.tokenizer.decode(ids)
            p["logprobs"] = 1
        else:
            msgs = [{"role": "system", "content": self.system}] if self.system else []
            p["messages"] = msgs + [{"role": "user", "content": self.tokenizer.decode(ids)}]
            p["logprobs"] = True
        p.update(self.extra_body)
        return p

    # ---- one request, with retries -----------------------------------------------------------------------------
    def _request(self, payload: dict) -> list[dict]:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait_s = None
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = json.loads(resp.read())
                with self._lock:
                    self.stats["requests"] += 1
                return _parse_choices(data, self.api)
            except urllib.error.HTTPError as e:
                msg = _error_message(e)
                if e.code not in RETRY_STATUS:
                    raise OpenAIError(f"{self.url}: HTTP {e.code}: {msg}") from None
                last = f"HTTP {e.code}: {msg}"
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait_s = float(retry_after)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
                last = f"malformed response ({type(e).__name__}: {e})"
            if attempt == self.max_retries:
                break
            with self._lock:
                self.stats["retries"] += 1
                jitter = self._rng.random()
            time.sleep(
                wait_s
                if wait_s is not None
                else min(self.max_backoff, self.backoff * 2**attempt) * jitter
            )
        raise OpenAIError(
            f"{self.url}: gave up after {self.max_retries + 1} attempts; last error: {last}"
        )

    def _store(self, key: str, choices: list[dict]) -> None:
        if self.cache_path is None:
            return
        with self._lock:
            self._cache[key] = choices
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with self.cache_path.open("a") as f:
                f.write(json.dumps({"key": key, "choices": choices}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    # ---- response -> Completion ------------------------------------------------------------------------------
    def _completion(self, prompt_index: int, choice: dict, params: SamplingParams) -> Completion:
        text, reason = choice["text"], choice["finish_reason"]
        ids = choice.get("token_ids")
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            eos = self.tokenizer.eos_token_id
            if (
                reason == "stop"
                and eos is not None
                and (not params.stop_token_ids or eos in params.stop_token_ids)
            ):
                ids = ids + [eos]
        lps = choice.get("logprobs")
        ok = isinstance(lps, list) and len(lps) == len(ids) and all(x is not None for x in lps)
        return Completion(
            prompt_index=prompt_index,
            token_ids=list(ids),
            logprobs=list(lps) if ok else [math.nan] * len(ids),
            text=text,
            finish_reason=reason,
            meta={"logprobs": ok, "source": self.url},
        )


def _parse_choices(data: dict, api: str) -> list[dict]:
    """Server response -> [{text, finish_reason, token_ids?, logprobs?}] in choice order."""
    out = []
    for c in sorted(data["choices"], key=lambda c: c.get("index", 0)):
        if api == "completions":
            text = c["text"]
            lp = (c.get("logprobs") or {}).get("token_logprobs")
        else:
            msg = c["message"]
            text = msg.get("content") or ""
            reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            if reasoning:
                text = f"<think>\n{reasoning}\n</think>\n{text}"
            lp = [
                t.get("logprob") for t in ((c.get("logprobs") or {}).get("content") or [])
            ] or None
        reason = "length" if c.get("finish_reason") == "length" else "stop"
        out.append(
            {"text": text, "finish_reason": reason, "token_ids": c.get("token_ids"), "logprobs": lp}
        )
    return out


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"{}")
        err = body.get("error", body)
        msg = err.get("message", err) if isinstance(err, dict) else err
    except Exception:
        msg = e.reason
    return " ".join(str(msg).split())[:300]


def _read_cache(path: Path) -> dict:
    """key -> choices; a torn last line (crash while writing) is ignored and closed with a newline."""
    cache = {}
    if path.is_file():
        text = path.read_text()
        if text and not text.endswith("\n"):
            with path.open("a") as f:
                f.write("\n")
        for line in text.splitlines():
            try:
                rec = json.loads(line)
                cache[rec["key"]] = rec["choices"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return cache
