"""benchmarks/scale.py at toy size on the CPU: one aha case under a memory plan runs end to end, with forced
lengths, and the table has its columns (the real table is the H200 run in the README)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scale  # noqa: E402


def test_tiny_table(capsys):
    (row,) = scale.main(["--tiny", "--max-memory-gib", "1", "--profile", "8"])
    assert row["model"] == "tiny" and row["new"] == 8
    assert row["len"] == 8  # forced: no completion stopped early
    assert row["step_s"] > 0 and row["update_s"] > 0 and row["mfu"] > 0
    assert 0 < row["est_gib"] < 1 and row["plan"].isdigit()  # the plan ran (CPU with a limit)
    out = capsys.readouterr().out
    assert (
        "| model | new | step_s | generate_s | update_s | mfu | peak_gib | est_gib | plan |" in out
    )
    # --profile: the last step under cProfile, aha's functions first (the step itself among them)
    assert "step 2 under cProfile" in out and "grpo.py" in out and "(train_step)" in out
