"""What `aha sample` writes, resumably, and the checkpoint step it records for provenance.

OUT/data.jsonl holds the kept rows and OUT/progress.jsonl one entry per finished chunk of prompts. A chunk's rows
and then its progress entry are appended and fsynced. On open (aha.train.run_dir.read_jsonl): a torn last line of
either file (a crash or a full disk mid-write) is dropped with one line; any other line that is not a JSON object
is a one-line error naming file:line, never silently lost. Rows of chunks without a progress entry are dropped,
and a chunk whose rows are not all there (its entry counts them) is sampled again, so a restarted run continues
with the next chunk, never duplicates a row, and stats.json counts exactly the rows in data.jsonl.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..train.run_dir import read_jsonl, write_jsonl


class ResumableWriter:
    """OUT/data.jsonl + OUT/progress.jsonl; on open, only complete committed chunks are kept."""

    def __init__(self, out: Path, log: Callable[[str], None] = print):
        out.mkdir(parents=True, exist_ok=True)
        self.data, self.progress = out / "data.jsonl", out / "progress.jsonl"
        chunks = [r for r in read_jsonl(self.progress, log) if "prompts" in r]
        rows = read_jsonl(self.data, log)
        have = Counter(r.get("prompt_index") for r in rows)
        self.chunks = []
        for c in chunks:
            n, kept = sum(have[i] for i in c["prompts"]), c.get("stats", {}).get("kept")
            if kept is None or n == kept:
                self.chunks.append(c)
            else:  # rows lost after the commit (a file cut short): the chunk is not done
                log(
                    f"{self.data}: {n} of the {kept} rows of prompts {c['prompts'][0]}.."
                    f"{c['prompts'][-1]} are there; sampling them again"
                )
        self.done = {i for r in self.chunks for i in r["prompts"]}
        _rewrite(self.progress, self.chunks)
        _rewrite(self.data, [r for r in rows if r.get("prompt_index") in self.done])

    def commit(self, prompts: list[int], rows: list[dict], stats: dict) -> None:
        for path, recs in (
            (self.data, rows),
            (self.progress, [{"prompts": prompts, "stats": stats}]),
        ):
            with path.open("a") as f:
                for r in recs:
                    f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.chunks.append({"prompts": prompts, "stats": stats})
        self.done.update(prompts)

    def totals(self) -> dict:
        out: dict = {}
        for c in self.chunks:
            for k, v in c["stats"].items():
                out[k] = out.get(k, 0) + v
        return out


def _rewrite(path: Path, rows: list[dict]) -> None:
    write_jsonl(path, rows, ensure_ascii=False, default=str)


def checkpoint_step(path: str) -> int | None:
    """The training step of a checkpoint directory (its state.json), None for other models."""
    state = Path(path) / "state.json"
    try:
        return int(json.loads(state.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
