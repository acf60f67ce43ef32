"""benchmarks/decode_step.py at toy size on the CPU: both paths run, the packed one holds its copy and gives the
same logits, and the table prints (the real table is the H200 run quoted in the README)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import decode_step  # noqa: E402


def test_tiny_table(capsys):
    rows = decode_step.main(["--tiny"])
    assert [r["path"] for r in rows] == ["modules", "packed"]
    assert rows[0]["packed_mib"] == 0 < rows[1]["packed_mib"]
    assert rows[1]["logits_rel_err"] < 1e-6 and all(r["ms_per_step"] > 0 for r in rows)
    assert "| model | context | path | ms_per_step |" in capsys.readouterr().out


def test_a_malformed_case_is_one_line(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        decode_step.main(["--cases", "1.5b"])
    assert e.value.code == 2 and "--cases takes ARCH:NEW_TOKENS" in capsys.readouterr().err
