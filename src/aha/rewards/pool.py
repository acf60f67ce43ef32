"""A pool of reward worker processes with a per-job timeout; a stuck worker is killed and replaced.

    pool.run(jobs) -> one outcome per job: ("ok", value) | ("timeout", None) | ("error", message)

Jobs go out in chunks (one pipe message per chunk, to keep IPC cheap); the worker answers after each job, so
the parent knows which job is running and when it started. A job that runs past its budget gets its worker's
whole process group SIGKILLed (sympy stuck in a C bignum loop cannot be interrupted any other way), the job
scores as a timeout, the rest of its chunk is queued again, and a fresh worker takes the slot. A worker that
dies (segfault, OOM) costs only the job it was running. Every wait has a deadline, so `run` always returns.

Workers come from the "forkserver" start method with aha.rewards.worker preloaded: the parent (which may hold
CUDA and threads) is never forked, and a replacement starts without re-importing sympy. Workers are daemonic
and die with their parent; close() (also at garbage collection) stops and reaps them all.
"""

from __future__ import annotations

import glob
import math
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

from aha.rewards.sandbox import SCRATCH_PREFIX
from aha.rewards.worker import worker_main

STARTUP_TIMEOUT_S = 120.0  # a worker that is not ready by then is broken (e.g. cannot import aha)


@dataclass
class Job:
    name: str  # reward name or "module:function"
    args: tuple
    kwargs: dict
    budget: float  # seconds it may run


@dataclass
class _Worker:
    proc: object
    conn: object
    born: float
    ready: bool = False
    pending: deque = field(default_factory=deque)  # job indices sent, in order; head is running
    deadline: float = math.inf


def _kill(w: _Worker) -> None:
    """SIGKILL the worker's process group (it called setsid, so pgid == pid), then reap it."""
    try:
        os.killpg(w.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        w.proc.kill()
    except (ProcessLookupError, OSError, ValueError):
        pass
    w.conn.close()
    w.proc.join(timeout=5)
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{SCRATCH_PREFIX}{w.proc.pid}-*")):
        shutil.rmtree(path, ignore_errors=True)


def _shutdown(workers: list) -> None:
    for w in workers:
        try:
            if not w.pending and w.ready:
                w.conn.send(None)  # idle: ask it to exit
        except (OSError, ValueError):
            pass
    end = time.monotonic() + 1.0
    for w in workers:
        w.proc.join(timeout=max(0.0, end - time.monotonic()))
        if w.proc.is_alive():
            _kill(w)
        else:
            w.conn.close()
            w.proc.join()
    workers.clear()


def _start_hint() -> str:
    """The likely fix when workers die on start. A new worker imports the main script before it runs anything
    (multiprocessing's forkserver and spawn do, so that rewards defined there resolve): a script with no
    `if __name__ == "__main__":` guard starts training again in the worker, which dies at its first Process."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        guarded = path is None or "__main__" in Path(path).read_text(errors="replace")
    except OSError:
        guarded = True
    if not guarded:
        return (
            f"each worker imports the main script {path} first, which has no "
            '`if __name__ == "__main__":` guard; put the script\'s top-level code under one'
        )
    return "check that `python -c 'import aha.rewards.worker'` works here"


class WorkerPool:
    def __init__(
        self, num_workers: int = 2, *, memory_limit_mb: int = 4096, start_method: str = "forkserver"
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if start_method not in mp.get_all_start_methods():
            start_method = "spawn"
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(["aha.rewards.worker"])  # no effect if already running
        self.num_workers, self.memory_limit_mb = num_workers, memory_limit_mb
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)
        self.replaced = 0  # workers killed or found dead and replaced, over the pool's life
        self._stillborn = 0  # workers that died before saying "ready", since the last one that did

    def _spawn(self) -> _Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main,
            args=(theirs, self.memory_limit_mb),
            daemon=True,
            name="aha-reward-worker",
        )
        proc.start()
        theirs.close()
        return _Worker(proc, ours, time.monotonic())

    def _replace(self, i: int) -> None:
        _kill(self._workers[i])
        self._workers[i] = self._spawn()
        self.replaced += 1

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def run(self, jobs: list[Job]) -> list[tuple]:
        if not self._finalizer.alive:
            raise RuntimeError("WorkerPool is closed; create a new one")
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())
        try:
            return self._run(jobs)
        except (
            BaseException
        ):  # e.g. Ctrl-C: a busy worker's late answers must not leak into the next run
            for i, w in enumerate(self._workers):
                if w.pending:
                    w.pending = deque()
                    self._replace(i)
            raise

    def _run(self, jobs: list[Job]) -> list[tuple]:
        out: list = [None] * len(jobs)
        todo = deque(range(len(jobs)))
        chunk = max(1, min(64, math.ceil(len(jobs) / (4 * self.num_workers))))
        workers = self._workers
        while todo or any(w.pending for w in workers):
            now = time.monotonic()
            for i, w in enumerate(workers):  # feed idle workers
                if w.ready and not w.pending and todo:
                    ids = [todo.popleft() for _ in range(min(chunk, len(todo)))]
                    try:
                        w.conn.send([(jobs[j].name, jobs[j].args, jobs[j].kwargs) for j in ids])
                    except (OSError, ValueError):  # died while idle
                        todo.extendleft(reversed(ids))
                        self._replace(i)
                        continue
                    w.pending, w.deadline = deque(ids), now + jobs[ids[0]].budget
            deadlines = [
                w.deadline if w.ready else w.born + STARTUP_TIMEOUT_S
                for w in workers
                if w.pending or not w.ready
            ]
            timeout = min(5.0, max(0.0, min(deadlines) - now)) if deadlines else 5.0
            ready = wait([w.conn for w in workers] + [w.proc.sentinel for w in workers], timeout)
            now = time.monotonic()
            for i, w in enumerate(workers):
                dead = False
                if w.conn in ready or w.proc.sentinel in ready:
                    dead = self._drain(w, out, jobs, now)
                if dead and not w.ready:
                    self._stillborn += 1
                    if self._stillborn > 2 * self.num_workers:
                        _shutdown(workers)
                        raise RuntimeError(
                            f"reward workers die on start (exit code {w.proc.exitcode}); {_start_hint()}"
                        )
                    self._replace(i)
                elif dead:
                    w.proc.join(timeout=1)  # for the exit code in the message
                    self._fail_head(
                        w, out, todo, ("error", f"reward worker died (exit code {w.proc.exitcode})")
                    )
                    self._replace(i)
                elif w.pending and now >= w.deadline:
                    self._fail_head(w, out, todo, ("timeout", None))
                    self._replace(i)
                elif not w.ready and now >= w.born + STARTUP_TIMEOUT_S:
                    _shutdown(workers)
                    raise RuntimeError(
                        f"reward workers did not start within {STARTUP_TIMEOUT_S:.0f}s; check "
                        "that `python -c 'import aha.rewards.worker'` works in this environment"
                    )
        return out

    def _drain(self, w: _Worker, out: list, jobs: list[Job], now: float) -> bool:
        """Read every message waiting from `w`; True if the worker is gone."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "ready":
                    w.ready, self._stillborn = True, 0
                    continue
                j = w.pending.popleft()
                out[j] = msg
                w.deadline = now + jobs[w.pending[0]].budget if w.pending else math.inf
        except (EOFError, OSError):
            return True
        return not w.proc.is_alive()

    @staticmethod
    def _fail_head(w: _Worker, out: list, todo: deque, outcome: tuple) -> None:
        if w.pending:
            out[w.pending.popleft()] = outcome
        todo.extendleft(reversed(w.pending))  # the rest of its chunk goes to another worker
        w.pending = deque()

    def close(self) -> None:
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
