"""benchmarks/lm_head.py at toy size on the CPU: the plain row always, the fused rows through Triton's
interpreter where triton is installed (conftest sets TRITON_INTERPRET=1), and the table's columns (the real
table is the H200 run in the README)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import lm_head  # noqa: E402
from aha._triton import HAS_TRITON  # noqa: E402


def test_tiny_table(capsys, monkeypatch):
    monkeypatch.setenv("AHA_FAST_TRITON", "1")
    rows = lm_head.main(["--tiny"])
    assert rows[0]["path"] == "plain (torch)" and rows[0]["train_s"] > 0
    fused = [r for r in rows if r["path"] == "fused (Triton)"]
    assert len(fused) == (1 if HAS_TRITON else 0)
    assert all(r["speedup"] > 0 and r["logprobs_s"] > 0 for r in fused)
    assert "| case | path | chunk | train_s | logprobs_s |" in capsys.readouterr().out
