"""A helper for tests that start `aha train` runs as processes: wait for one and read its metrics."""

import json
import subprocess
from pathlib import Path


def finish(started: tuple[subprocess.Popen, Path]) -> list[dict]:
    """(process, out) from a test's start(): wait (10 minutes at most), assert it succeeded, metrics.jsonl's
    rows."""
    proc, out = started
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
