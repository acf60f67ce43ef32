"""The engine side of `aha serve`: one worker thread owns the engine and batches concurrent requests.

The engine is not thread-safe, so one thread calls it. It takes a request (a `Job`: its prompts, sampling
params and a token limit per completion), waits up to `window_ms` for more requests whose params are equal
except for max_tokens, up to `max_prompts` prompts in all, and runs the group in one engine.generate call
with the largest limit. Each completion is held to its own request's limit: `on_tokens` stops delivering past
it and returns False so the engine drops that completion, and `apply_limit` cuts what an engine that delivers
at the end (HFEngine) generated beyond it. Seeded requests run alone, so their samples do not depend on what
else was in flight.

Failures stay with their request: if a batched call raises, each request of the group is run again alone
(streamed requests that already sent tokens cannot be retried and get the error). A client that disconnects
sets `job.aborted`: a queued job is skipped, a running one's completions are aborted through `on_tokens`.

Results go back to the event loop as events on the job's asyncio queue, from this thread:
("tokens", completion index, new ids) while streaming, then ("done", [Output]) or ("error", exception).
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ..rollout.base import Completion, SamplingParams
from .scoring import score
from .text import apply_limit


class ServerClosing(RuntimeError):
    """The server is shutting down; the request was not run."""

    def __init__(self, message: str = "the server is shutting down"):
        super().__init__(message)


@dataclass
class Output:
    completion: Completion
    top: list[list[tuple[int, float]]] | None = (
        None  # per completion token: k (id, logprob), best first
    )
    prompt_logprobs: list[float | None] | None = None  # per prompt token; the first has none
    prompt_top: list[list[tuple[int, float]] | None] | None = None


@dataclass(eq=False)
class Job:
    prompts: list[list[int]]
    params: SamplingParams  # max_tokens = max(limits), at least 1
    limits: list[int]  # new tokens allowed per completion, prompt-major (len(prompts) * params.n)
    loop: asyncio.AbstractEventLoop
    stream: bool = False  # post ("tokens", ...) events as the engine reports tokens
    alternatives: int | None = (
        None  # k most likely tokens per completion token, by a forward (None: no)
    )
    prompt_logprobs: bool = False  # logprobs of the prompt tokens by a forward (echo)
    aborted: bool = False  # set by the event loop when the client goes away
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    delivered: list[int] = field(default_factory=list)

    def key(self):
        """Jobs with equal keys can share an engine call; None: this job runs alone."""
        if self.params.seed is not None or max(self.limits) == 0:
            return None
        return dataclasses.replace(self.params, max_tokens=1)

    def post(self, *event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is gone
            pass


class Scheduler:
    def __init__(
        self, engine, tokenizer, model=None, *, window_ms: float = 5.0, max_prompts: int = 64
    ):
        self.engine, self.tokenizer, self.model = engine, tokenizer, model
        self.window, self.max_prompts = window_ms / 1000.0, max_prompts
        self.q: queue.Queue = queue.Queue()
        self.running: list[Job] = []
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="aha-serve-engine")
        self.thread.start()

    def submit(self, job: Job) -> None:
        if self.closed:
            raise ServerClosing()
        job.delivered = [0] * len(job.limits)
        self.q.put(job)

    def shutdown(self) -> None:
        """Refuse new jobs, fail queued ones and abort running ones with ServerClosing (a 503), without waiting:
        called when the stop signal arrives, so no request is left for the HTTP server to cancel."""
        if not self.closed:
            self.closed = True
            for job in list(self.running):
                job.aborted = True
            self.q.put(None)

    def close(self, timeout: float = 10.0) -> None:
        """shutdown(), then stop the thread (waits at most `timeout` s for the engine)."""
        self.shutdown()
        self.thread.join(timeout=timeout)

    def _loop(self) -> None:
        pending: deque = deque()
        while True:
            job = pending.popleft() if pending else self.q.get()
            if job is None:
                break
            if self.closed:  # queued before the shutdown: not run
                job.post("error", ServerClosing())
                continue
            group, n_prompts, key = [job], len(job.prompts), job.key()
            if key is not None:
                deadline = time.monotonic() + self.window
                while n_prompts < self.max_prompts and (left := deadline - time.monotonic()) > 0:
                    try:
                        nxt = self.q.get(timeout=left)
                    except queue.Empty:
                        break
                    if nxt is not None and nxt.key() == key:
                        if n_prompts + len(nxt.prompts) <= self.max_prompts:
                            group.append(nxt)
                            n_prompts += len(nxt.prompts)
                            continue
                    pending.append(nxt)
                    break
            self.running = group
            try:
                self._run(group)
            finally:
                self.running = []
        for job in [*pending, *iter_queue(self.q)]:
            if job is not None:
                job.post("error", ServerClosing())

    def _run(self, group: list[Job]) -> None:
        live = [j for j in group if not j.aborted]
        if not live:
            return
        if self.closed:  # shut down while the group gathered
            for j in live:
                j.post("error", ServerClosing())
            return
        try:
            comps = self._generate(live)
        except Exception as e:
            if len(live) == 1:
                live[0].post("error", e)
                return
            for j in live:  # isolate the failure: each request again, alone
                if j.stream and any(j.delivered):
                    j.post("error", e)
                else:
                    j.delivered = [0] * len(j.limits)
                    self._run([j])
            return
        at = 0
        for j in live:
            mine = comps[at : at + len(j.limits)]
            for c in mine:
                c.prompt_index -= at // j.params.n
            at += len(j.limits)
            if j.aborted and self.closed:  # cut short by the shutdown: not a finished result
                j.post("error", ServerClosing())
                continue
            try:
                j.post("done", [self._output(j, c, k) for k, c in enumerate(mine)])
            except Exception as e:
                j.post("error", e)

    def _generate(self, live: list[Job]) -> list[Completion]:
        n = live[0].params.n
        if max(live[0].limits) == 0:  # echo-only scoring (max_tokens=0): nothing to generate
            return [
                Completion(i, [], [], "", "length")
                for i in range(len(live[0].prompts))
                for _ in range(n)
            ]
        prompts = [p for j in live for p in j.prompts]
        params = dataclasses.replace(
            live[0].params, max_tokens=max(j.params.max_tokens for j in live)
        )
        owners = [(j, k) for j in live for k in range(len(j.limits))]

        def on_tokens(i: int, new_ids: list[int]) -> bool:
            j, k = owners[i]
            if j.aborted:
                return False
            limit, have = j.limits[k], j.delivered[k]
            take = list(new_ids[: max(0, limit - have)])
            j.delivered[k] = have + len(take)
            if take and j.stream:
                j.post("tokens", k, take)
            return not (j.delivered[k] >= limit and limit < params.max_tokens)

        return self.engine.generate(prompts, params, on_tokens=on_tokens)

    def _output(self, job: Job, comp: Completion, k: int) -> Output:
        p = job.params
        comp = apply_limit(
            comp,
            job.limits[k],
            self.tokenizer,
            p.stop_token_ids,
            p.stop,
            p.include_stop_str_in_output,
        )
        out = Output(comp)
        if job.alternatives is None and not job.prompt_logprobs:
            return out
        prompt = job.prompts[comp.prompt_index]
        first = 1 if job.prompt_logprobs else len(prompt)
        lps, tops = score(
            self.model, prompt + comp.token_ids, first, p.temperature, job.alternatives or 0
        )
        m = len(prompt) - 1 if job.prompt_logprobs else 0  # scored prompt positions
        if job.prompt_logprobs:
            out.prompt_logprobs, out.prompt_top = [None, *lps[:m]], [None, *tops[:m]]
        if job.alternatives is not None:
            out.top = tops[m:]
        return out


def iter_queue(q: queue.Queue):
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return
