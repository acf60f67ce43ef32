"""A line at least every ~10 s while a long phase runs (an evaluation, a sampling pass), so a user never waits
minutes on a silent terminal.

    with Heartbeat("eval", log) as hb:      # log: print, or a trainer's rank-0 print
        ...; hb.update("64/500 problems")  # the phase's own progress: shown at the next beat, not at once

A daemon thread prints `label: STATUS (ELAPSED)` whenever `every` seconds passed since the last line, so the
phase's own progress calls cost nothing and cannot flood the console; a quick phase prints nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Heartbeat:
    def __init__(
        self, label: str, log: Callable[[str], None] | None, every: float = 10.0, status: str = ""
    ):
        self.label, self.log, self.every, self.status = label, log, every, status
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = self.last = time.monotonic()

    def update(self, status: str) -> None:
        self.status = status.removeprefix(f"{self.label}: ")

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.every)):
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                self.log(f"{self.label}: {self.status or 'working'} ({fmt_seconds(now - self.t0)})")

    def __enter__(self) -> Heartbeat:
        if self.log is not None:
            self._thread = threading.Thread(
                target=self._beat, name=f"aha-{self.label}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def fmt_seconds(s: float) -> str:
    s = int(s)
    return (
        f"{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
        if s >= 60
        else f"{s}s"
    )
