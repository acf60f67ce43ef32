"""The reward worker process: receives chunks of (name, args, kwargs) jobs, answers one message per job.

It runs in its own session (so the pool can kill it and anything it started with one killpg), dies with its
parent (PR_SET_PDEATHSIG), and is memory-limited (RLIMIT_AS). Jobs run on the process's main thread, so
math-verify's signal.alarm timeouts work here. Imported by the forkserver ahead of time (preload), so a
replacement worker starts in milliseconds instead of re-importing sympy.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal

import aha.rewards.countdown  # noqa: F401  (preloaded in the forkserver: a fresh worker is warm)
import aha.rewards.format  # noqa: F401
import aha.rewards.math  # noqa: F401
from aha.rewards.registry import get_reward

try:  # the heavy part of math-verify: parse a little once so lazy imports happen in the forkserver too
    from aha.rewards.math import math_equal

    math_equal("\\frac{1}{2}+x", "x+0.5")
except Exception:  # noqa: BLE001  (preloading is an optimisation only)
    pass

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe EOF still ends an idle worker
        pass


def worker_main(conn, memory_limit_mb: int) -> None:
    os.setsid()  # own process group: the pool's killpg reaches every process this worker starts
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if memory_limit_mb > 0:
        limit = memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fns = {}
    conn.send(("ready", os.getpid()))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for name, args, kwargs in chunk:
            try:
                if name not in fns:
                    fns[name] = get_reward(name)
                out = ("ok", fns[name](*args, **kwargs))
            except BaseException as e:  # noqa: BLE001  (a user reward may raise anything; report it)
                out = ("error", f"{type(e).__name__}: {e}"[:500])
            try:
                conn.send(out)
            except (EOFError, OSError):
                return
            except Exception as e:  # noqa: BLE001  (unpicklable return value)
                conn.send(("error", f"reward returned an unpicklable value: {e}"[:500]))
