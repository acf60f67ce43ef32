"""The resumable request cache: every answered request appended (and fsynced) to a JSONL file as it lands.

Key = sha256(json.dumps([url, payload], sort_keys=True)) + ":" + the occurrence number of that payload in this
cache's life (1 for the first time it is asked, 2 for the second, ...). A run that crashes and restarts with the
same calls finds every finished request under the same key: nothing is regenerated or duplicated, while an
unseeded request asked twice in one run still gets two fresh answers (its occurrence numbers differ).

Files written before the client stopped asking for logprobs by default are still read: a request also looks
under its legacy key, the key the old client gave it (the payload with "logprobs" always set, no
"return_token_ids"), so resuming an old run after an upgrade regenerates nothing either.

Line format: {"key": KEY, "choices": [{"text", "finish_reason", "token_ids"?, "logprobs"?, ...}]}. A torn last
line (a crash mid-write) is skipped and closed with a newline before anything is appended.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from pathlib import Path


class RequestCache:
    """Keys are numbered always; answers are kept (and found again) only when `path` is given."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._entries: dict[str, list[dict]] = _read(self.path) if self.path else {}
        self._seen: Counter = Counter()  # payload hash -> times asked (main thread only)
        self._seen_legacy: Counter = Counter()
        self._lock = threading.Lock()

    def lookup(
        self, url: str, payload: dict, legacy: dict | None = None
    ) -> tuple[str, list | None]:
        """-> (key to store the answer under, the cached choices or None). Call in a fixed order."""
        key = _key(url, payload, self._seen)
        hit = self._entries.get(key)
        if legacy is not None:
            old = _key(url, legacy, self._seen_legacy)
            hit = hit if hit is not None else self._entries.get(old)
        return key, hit

    def store(self, key: str, choices: list[dict]) -> None:
        """Thread-safe; the line is on disk when this returns."""
        if self.path is None:
            return
        with self._lock:
            self._entries[key] = choices
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "choices": choices}) + "\n")
                f.flush()
                os.fsync(f.fileno())


def _key(url: str, payload: dict, seen: Counter) -> str:
    base = hashlib.sha256(json.dumps([url, payload], sort_keys=True).encode()).hexdigest()
    seen[base] += 1
    return f"{base}:{seen[base]}"


def _read(path: Path) -> dict[str, list[dict]]:
    entries: dict[str, list[dict]] = {}
    if not path.is_file():
        return entries
    text = path.read_text()
    if text and not text.endswith("\n"):
        with path.open("a") as f:
            f.write("\n")
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            entries[rec["key"]] = rec["choices"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return entries
