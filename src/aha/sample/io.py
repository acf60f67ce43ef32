"""What `aha sample` writes, resumably, and the checkpoint step it records for provenance.

OUT/data.jsonl holds the kept rows and OUT/progress.jsonl one entry per finished chunk of prompts. A chunk's rows
and then its progress entry are appended and fsynced; on open, rows of chunks without a progress entry (a crash
between the two) and a torn last line are dropped, so a restarted run continues with the next chunk and never
duplicates a row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class ResumableWriter:
    """OUT/data.jsonl + OUT/progress.jsonl; rows of chunks without a progress entry are dropped on open."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.data, self.progress = out / "data.jsonl", out / "progress.jsonl"
        self.chunks = [r for r in _read_jsonl(self.progress) if "prompts" in r]
        self.done = {i for r in self.chunks for i in r["prompts"]}
        _rewrite(self.progress, self.chunks)  # also drops a torn last line
        rows = [r for r in _read_jsonl(self.data) if r.get("prompt_index") in self.done]
        _rewrite(self.data, rows)

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


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn by a crash mid-write
    return rows


def _rewrite(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    os.replace(tmp, path)


def checkpoint_step(path: str) -> int | None:
    """The training step of a checkpoint directory (its state.json), None for other models."""
    state = Path(path) / "state.json"
    try:
        return int(json.loads(state.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
