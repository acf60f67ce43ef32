"""The request batcher of `aha serve` (src/aha/serve.py): concurrent HTTP requests share one engine.generate call.

One worker thread owns the engine. It takes a request, then waits up to `window_ms` for more requests with
equal SamplingParams, up to `max_prompts` prompts in all, and runs the group in one call; each request gets its
own completions back, prompt_index renumbered from 0. A request that differs (or would overflow the group)
starts the next group. Seeded requests run alone, so their samples do not depend on what else was in flight.
An engine error is raised in every request of the group (the server answers each with HTTP 500).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

from .rollout.base import Completion, SamplingParams


class Batcher:
    """One thread calls engine.generate; requests with equal unseeded SamplingParams share a call."""

    def __init__(self, engine, window_ms: float, max_prompts: int):
        self.engine, self.window, self.max_prompts = engine, window_ms / 1000.0, max_prompts
        self.q: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="aha-serve-batcher")
        self.thread.start()

    def submit(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        fut: Future = Future()
        self.q.put((prompts, params, fut))
        return fut.result()

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        pending: list = []
        while True:
            item = pending.pop(0) if pending else self.q.get()
            if item is None:
                return
            group, n_prompts = [item], len(item[0])
            if item[1].seed is None:
                deadline = time.monotonic() + self.window
                while n_prompts < self.max_prompts and (left := deadline - time.monotonic()) > 0:
                    try:
                        nxt = self.q.get(timeout=left)
                    except queue.Empty:
                        break
                    if (
                        nxt is not None
                        and nxt[1] == item[1]
                        and n_prompts + len(nxt[0]) <= self.max_prompts
                    ):
                        group.append(nxt)
                        n_prompts += len(nxt[0])
                    else:
                        pending.append(nxt)
                        break
            self._run(group)

    def _run(self, group) -> None:
        prompts = [p for g in group for p in g[0]]
        try:
            comps = self.engine.generate(prompts, group[0][1])
        except Exception as e:  # answered as HTTP 500 to every request of the group
            for _, _, fut in group:
                fut.set_exception(e)
            return
        n, at = group[0][1].n, 0
        for ps, _, fut in group:
            mine = comps[at * n : (at + len(ps)) * n]
            for c in mine:
                c.prompt_index -= at
            fut.set_result(mine)
            at += len(ps)
