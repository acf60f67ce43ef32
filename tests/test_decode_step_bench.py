"""benchmarks/decode_step.py at toy size on the CPU: the three paths run, the packed one holds its copy and gives
the same logits, the fp8 one a smaller cache, and the table prints (the real table is the H200 run quoted in the
README)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import decode_step  # noqa: E402


def test_tiny_table(capsys):
    rows = decode_step.main(["--tiny", "--kernels", "5"])
    assert [r["path"] for r in rows] == ["modules", "packed", "fp8"]
    assert rows[0]["packed_mib"] == 0 < rows[1]["packed_mib"]
    assert rows[1]["logits_rel_err"] < 1e-6 and all(r["ms_per_step"] > 0 for r in rows)
    # fp32 weights on the CPU: 4 bytes an element against 1 + a 4-byte scale per head of 8
    assert rows[2]["kv_mib"] < 0.4 * rows[1]["kv_mib"]
    out = capsys.readouterr().out
    assert "| model | context | path | ms_per_step |" in out and "fp8/packed (bf16 KV)" in out
    # --kernels: a table a path (kernel names come from the CUDA profiler: empty on the CPU)
    assert out.count("kernels a step by time") == 3 and rows[0]["by_kernel"] == {}


def test_a_malformed_case_is_one_line(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        decode_step.main(["--cases", "1.5b"])
    assert e.value.code == 2 and "--cases takes ARCH:NEW_TOKENS" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        decode_step.main(["--tiny", "--paths", "packed,int4"])
    assert e.value.code == 2 and "--paths takes a comma list" in capsys.readouterr().err


def test_a_nopdl_path_runs_with_aha_pdl_0_and_restores_it(monkeypatch):
    import os

    seen = []
    run = decode_step._run_path
    monkeypatch.setattr(
        decode_step, "_run_path", lambda *a: seen.append(os.environ.get("AHA_PDL")) or run(*a)
    )
    monkeypatch.delenv("AHA_PDL", raising=False)
    rows = decode_step.main(["--tiny", "--paths", "packed,packed-nopdl"])
    assert [r["path"] for r in rows] == ["packed", "packed-nopdl"] and seen == ["1", "0"]
    assert "AHA_PDL" not in os.environ


def test_an_unfused_path_turns_fused_sums_off_and_restores_them(monkeypatch):
    from aha.rollout.fast import model_runner as mr

    seen = []
    run = decode_step._run_path
    monkeypatch.setattr(decode_step, "_run_path", lambda *a: seen.append(mr.FUSED_SUMS) or run(*a))
    rows = decode_step.main(["--tiny", "--paths", "fp8w,fp8w-unfused,fp8w-unfused-nopdl"])
    assert [r["path"] for r in rows] == ["fp8w", "fp8w-unfused", "fp8w-unfused-nopdl"]
    assert seen == [True, False, False] and mr.FUSED_SUMS
