"""benchmarks/host_metrics.py at toy size: it runs, prints its table, and every row's check that the code
before the fast paths and the code now give identical outputs passes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import host_metrics  # noqa: E402


def test_tiny_table(capsys):
    host_metrics.main(["--n", "16", "--chars", "3000", "--tokens", "300", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "| step (all texts) | old ms | new ms | old / new |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms |" not in line]
    assert len(rows) == 7 and all(r.endswith("x |") for r in rows)
