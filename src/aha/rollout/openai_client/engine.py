"""OpenAIEngine: the Engine protocol over an OpenAI-compatible server (vLLM, SGLang, DeepSeek's API, `aha serve`).

    engine = OpenAIEngine("http://127.0.0.1:8000/v1", "teacher", tokenizer, concurrency=16,
                          cache_path="runs/traces/requests.jsonl")
    completions = engine.generate(prompt_ids, SamplingParams(n=4, temperature=0.6, max_tokens=8192, seed=0))

One request per prompt asks for its n samples (seed + i for prompt i when seeded); at most `concurrency`
requests are in flight over pooled keep-alive connections, each retried as transport.py says. A server that
ignores `n` (DeepSeek's API answers one choice) gets one request per missing sample: sample j >= 1 of prompt i
asks n=1 with seed + i + j * len(prompts), so every sample of a call has its own seed; once a server has
answered one choice for n > 1, later prompts send those requests at the same time as the first.

Request fields: model, max_tokens, temperature, top_p, n, seed, stop (SamplingParams.stop strings, when the
caller's SamplingParams has them); vllm_extensions=True adds vLLM's top_k, stop_token_ids,
include_stop_str_in_output and return_token_ids (recent vLLM then returns each choice's token_ids, used as
they are instead of re-encoding the text; set False for APIs that reject unknown fields); logprobs=True asks
for the sampled tokens' logprobs (off by default: teacher traces do not need them and DeepSeek's reasoner
rejects the field); extra_body is merged in last (e.g. {"repetition_penalty": 1.05, "min_p": 0.05}). A 400
that names a field this client added (a vLLM field, logprobs) says which setting leaves it out.

With cache_path, every answer is kept as it lands (cache.py): a rerun of the same calls asks nothing twice.
The first request that fails for good fails the call, after those in flight have landed (and been cached).

api="completions" sends the prompt as text (decoded from the ids) or, with send_token_ids=True, as the ids
(vLLM, SGLang and aha serve accept both). api="chat" sends the decoded prompt as one user message after an
optional system message, so render prompts with a bare "{prompt}" template; reasoning comes back as
<think>...</think> before the answer (response.py).
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from queue import Empty, Queue

from ..base import Completion, SamplingParams
from .cache import RequestCache
from .response import parse_choices, to_completion
from .transport import OpenAIError, Transport

APIS = ("completions", "chat")
# Set by the engine from its arguments and SamplingParams: one source of truth, so extra_body may not set them.
OWN_FIELDS = ("model", "prompt", "messages", "n", "seed", "max_tokens", "temperature", "top_p")
OWN_FIELDS += ("stream",)  # the client reads whole responses, not server-sent events
VLLM_FIELDS = ("return_token_ids", "stop_token_ids", "top_k", "include_stop_str_in_output")


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
        logprobs: bool = False,
        system: str | None = None,
        cache_path: str | Path | None = None,
        extra_body: dict | None = None,
    ):
        if api not in APIS:
            raise ValueError(f"unknown api {api!r}; valid: {', '.join(APIS)}")
        if concurrency < 1 or timeout <= 0 or max_retries < 0 or backoff < 0:
            raise ValueError(
                "OpenAIEngine needs concurrency >= 1, timeout > 0, max_retries >= 0, backoff >= 0"
            )
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        clash = sorted(set(extra_body or {}) & set(OWN_FIELDS))
        if clash:
            raise ValueError(
                f"extra_body may not set {', '.join(clash)}: they come from the engine's arguments "
                "and SamplingParams"
            )
        path = "/completions" if api == "completions" else "/chat/completions"
        self.url = base_url.rstrip("/") + path
        self.model, self.tokenizer, self.api, self.system = model, tokenizer, api, system
        self.concurrency, self.send_token_ids = concurrency, send_token_ids
        self.vllm_extensions, self.logprobs = vllm_extensions, logprobs
        self.extra_body = dict(extra_body or {})
        self.transport = Transport(
            self.url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            connections=concurrency,
        )
        self.cache = RequestCache(cache_path)
        self.stats = self.transport.stats  # requests, retries, cache_hits, fill_ins
        self.ignores_n = False  # learnt: the server answered one choice for n > 1

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the Engine call -------------------------------------------------------------------------------------
    def generate(
        self, prompt_token_ids: list[list[int]], params: SamplingParams
    ) -> list[Completion]:
        if not prompt_token_ids or any(len(p) == 0 for p in prompt_token_ids):
            raise ValueError("generate() needs a non-empty list of non-empty prompts")
        n, P = params.n, len(prompt_token_ids)
        bodies = [self._payload(ids, params) for ids in prompt_token_ids]
        # Per prompt: the choices of its n-sample request; sample j -> the choice of its own (fill-in)
        # request; the samples that have a fill-in request.
        first: list[list[dict] | None] = [None] * P
        fills: list[dict[int, dict]] = [{} for _ in range(P)]
        asked: list[set[int]] = [set() for _ in range(P)]
        queue: deque = deque()  # (prompt, sample or None for the n-sample request, key, payload)

        def seeded(i: int, j: int, n_ask: int) -> dict:
            body = dict(bodies[i], n=n_ask)
            if params.seed is not None:  # j = 0: seed + i, the n-sample request's seed
                body["seed"] = params.seed + i + j * P
            return body

        def got_first(i: int, choices: list[dict]) -> None:
            first[i] = choices[:n]
            if len(choices) == 1 and n > 1:
                self.ignores_n = True
            for j in range(len(first[i]), n):
                ask(i, j)

        def ask(i: int, j: int) -> None:
            """Sample j of prompt i by itself (n=1). Its key is numbered when it is first needed: only
            identical unseeded requests share a payload, and their answers are interchangeable."""
            if j in asked[i]:
                return
            asked[i].add(j)
            body = seeded(i, j, 1)
            key, hit = self.cache.lookup(self.url, body)
            if hit is not None:
                self.stats["cache_hits"] += 1
                fills[i][j] = hit[0]
            else:
                queue.append((i, j, key, body))

        for i in range(P):  # keys are numbered here, in call order, so a rerun finds the same ones
            body = seeded(i, 0, n)
            key, hit = self.cache.lookup(self.url, body, self._legacy(body, params))
            if hit is not None:
                self.stats["cache_hits"] += 1
                got_first(i, hit)
                continue
            queue.append((i, None, key, body))
            if self.ignores_n:
                for j in range(1, n):
                    ask(i, j)
        self._run(queue, got_first, fills)
        out = []
        for i in range(P):
            recs = first[i] + [fills[i][j] for j in range(len(first[i]), n)]
            out.extend(to_completion(i, r, params, self.tokenizer, self.url) for r in recs)
        return out

    def _run(self, queue: deque, got_first, fills) -> None:
        """Send the queued requests, `concurrency` at a time; a short answer queues its fill-ins.

        Each request runs in a daemon thread: after a failure the others stop retrying and the call waits
        for those in flight (their answers are cached: paid-for samples are kept); after Ctrl-C it returns
        at once, and requests still in flight finish (and are cached) in the background or die with the
        process, instead of holding the exit for up to `timeout`."""
        stop = threading.Event()
        results: Queue = Queue()  # (prompt, sample or None, choices or None, exception or None)

        def send(i: int, j: int | None, key: str, body: dict) -> None:
            try:
                choices = self.transport.post(body, lambda d: parse_choices(d, self.api), stop)
                self.cache.store(key, choices)  # as soon as it lands: a crash keeps it
                results.put((i, j, choices, None))
            except OpenAIError as e:
                results.put((i, j, None, OpenAIError(f"{e}{_hint(e, body)}", e.status)))
            except BaseException as e:  # handed to the calling thread
                results.put((i, j, None, e))

        in_flight, failure = 0, None
        try:
            while in_flight or (queue and failure is None):
                while queue and failure is None and in_flight < self.concurrency:
                    i, j, key, body = queue.popleft()
                    threading.Thread(target=send, args=(i, j, key, body), daemon=True).start()
                    in_flight += 1
                i, j, choices, err = _get(results)
                in_flight -= 1
                if err is not None:
                    failure = failure or err
                    stop.set()  # the others stop retrying; those in flight still land
                elif j is None:
                    got_first(i, choices)
                else:
                    self.stats["fill_ins"] += 1
                    fills[i][j] = choices[0]
        finally:
            stop.set()
        if failure is not None:
            raise failure

    # ---- request bodies --------------------------------------------------------------------------------------
    def _payload(self, ids: list[int], params: SamplingParams) -> dict:
        """The request for one prompt, without n and seed (set per request)."""
        p = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        stop = list(getattr(params, "stop", ()) or ())
        if stop:
            p["stop"] = stop
        if params.top_k:
            if not self.vllm_extensions:
                raise ValueError(
                    "top_k is not part of the OpenAI API; set top_k=0 or vllm_extensions=True"
                )
            p["top_k"] = params.top_k
        if self.vllm_extensions:
            if params.stop_token_ids:
                p["stop_token_ids"] = list(params.stop_token_ids)
            if getattr(params, "include_stop_str_in_output", False):
                p["include_stop_str_in_output"] = True
            p["return_token_ids"] = True
        if self.api == "completions":
            p["prompt"] = list(ids) if self.send_token_ids else self.tokenizer.decode(ids)
        else:
            msgs = [{"role": "system", "content": self.system}] if self.system else []
            p["messages"] = msgs + [{"role": "user", "content": self.tokenizer.decode(ids)}]
        if self.logprobs:
            p["logprobs"] = 1 if self.api == "completions" else True
        p.update(self.extra_body)
        return p

    def _legacy(self, body: dict, params: SamplingParams) -> dict | None:
        """The body the client sent before return_token_ids and optional logprobs (cache.py), or None when
        that client could not have sent this request (it had no stop strings)."""
        if "stop" in body or "include_stop_str_in_output" in body:
            return None
        old = {k: v for k, v in body.items() if k != "return_token_ids"}
        old["logprobs"] = 1 if self.api == "completions" else True
        old.update(self.extra_body)
        return old


def _hint(err: OpenAIError, body: dict) -> str:
    """The fix, when a server refuses a field this client added: vLLM's extensions, logprobs, or max_tokens."""
    if err.status not in (400, 422):
        return ""
    message = str(err)
    if "logprobs" in body and "logprobs" in message:
        return " (this server takes no logprobs: leave logprobs off, openai.logprobs=false)"
    refused = [f for f in VLLM_FIELDS if f in body and f in message]
    if refused:
        return f" ({refused[0]} is a vLLM field: set vllm_extensions=False, openai.vllm_extensions=false)"
    if "max_tokens" in message and "context length" in message:  # past the served model's context
        return " (ask for fewer new tokens: sampling.max_new_tokens, --max-new-tokens in aha eval)"
    return ""


def _get(results: Queue):
    """The next result, waking every 0.2 s: a Ctrl-C that the kernel delivered to another thread (a request's
    thread) is only seen by the main thread when it runs again, and a plain get() could sleep until the slowest
    request in flight returns."""
    while True:
        try:
            return results.get(timeout=0.2)
        except Empty:
            continue
