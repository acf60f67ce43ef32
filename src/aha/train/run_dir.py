"""A run directory's own files: who may write into out=, and reading the JSONL logs a crash may have torn.

- A second run into an out= that already holds a run (a checkpoint or metrics) would prune its own new
  checkpoints by step number and leave the old run's as "latest" under the new config (issue 17, item 4):
  `check_out_dir` refuses it unless resume=true (continue it) or overwrite=true (`clear_run` deletes it first).
- metrics.jsonl, samples.jsonl and `aha sample`'s files are appended line by line, so a run killed mid-write (or a
  full disk) leaves a torn last line: `read_jsonl` drops that one with a line saying so; any other line that is
  not a JSON object is damage nobody should silently lose, and is a one-line error naming file:line.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError

# What a training run appends to or prunes in out= (config.yaml and data_stats.json are rewritten by every run).
RUN_FILES = ("checkpoints", "metrics.jsonl", "samples.jsonl", "tensorboard", "wandb_run_id")


def holds_run(out: str | Path) -> str | None:
    """What in `out` shows that a run was already made there (a checkpoint, metrics), or None."""
    out = Path(out)
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir()):
        return f"checkpoints in {ckpts}"
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        return str(metrics)
    return None


def check_out_dir(out: str | Path, *, resume: bool, overwrite: bool) -> None:
    """ConfigError unless `out` is free, or resume / overwrite say what to do with the run in it. Call it
    before loading the model: it is the user's choice to make, not an hour into a run."""
    if resume or overwrite:
        return
    found = holds_run(out)
    if found:
        raise ConfigError(
            "out",
            f"{out} already holds a run ({found}); add resume=true to continue it, overwrite=true to "
            "replace it, or choose another out=",
        )


def clear_run(out: str | Path, log: Callable[[str], None] = print) -> None:
    """overwrite=true: delete the earlier run's files from `out` (only those a run writes; nothing else)."""
    gone = []
    for name in RUN_FILES:
        p = Path(out) / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        else:
            continue
        gone.append(name)
    if gone:
        log(f"overwrite=true: deleted the earlier run's {', '.join(gone)} in {out}")


def read_jsonl(path: str | Path, log: Callable[[str], None] = print) -> list[dict]:
    """The rows of a JSONL file aha appends to ([] when it does not exist). The last non-blank line may be torn
    (dropped, one line through `log`); any other line that is not a JSON object raises ConfigError (file:line)."""
    path = Path(path)
    if not path.is_file():
        return []
    # bytes, not text: a torn multi-byte character must cost its line only, not the whole file
    lines = [(n, raw) for n, raw in enumerate(path.read_bytes().split(b"\n"), 1) if raw.strip()]
    rows = []
    for k, (n, raw) in enumerate(lines):
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if k == len(lines) - 1:
                log(f"{path}:{n}: dropped a torn last line (the run stopped while writing it)")
                break
            first = str(e).splitlines()[0][:120]
            raise ConfigError(
                "out",
                f"{path}:{n} is not a JSON row ({first}); repair or delete that line "
                "(only a torn last line is dropped on its own)",
            ) from None
        rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: list[dict], **dumps) -> None:
    """Replace `path` with `rows`, atomically (a crash leaves the old file or the new one, never half)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write("".join(json.dumps(r, **dumps) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def truncate_jsonl(path: str | Path, step: int, log: Callable[[str], None] = print) -> None:
    """Keep the rows of `path` with "step" <= step (resume: the later ones will be logged again)."""
    path = Path(path)
    if path.is_file():
        write_jsonl(path, [r for r in read_jsonl(path, log) if r.get("step", 0) <= step])
