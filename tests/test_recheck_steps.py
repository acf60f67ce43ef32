"""benchmarks/recheck_steps.py, the step / re-check analysis quoted in the README's --recheck section, on
completions checked by hand."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from recheck_steps import analyse, main, steps_of  # noqa: E402

VERIFIED = (
    " <think> 87+8-6+7 = 95-6+7 (verify: 87+8 = 95) = 88+7 (verify: 95-6 = 89) = 99 (verify: 89+7 = 96)"
    " </think>\n<answer> 96 </answer>"
)
FIXED = " <think> 31+3+2-3+1 = 35+2-3+1, wait, no: 31+3 = 34, so 34+2-3+1 = 36-3+1 (verify: 34+2 = 36) = 33+1 = 34 </think>"
PLAIN = " <think> 43+8-6-3-2 = 50-6-3-2 = 44-3-2 = 40-2 = 38 </think> <answer> 38 </answer>"


def test_steps_by_hand():
    # 95 = 87+8 right; 88 != 95-6; 99 != 89+7 (the chain goes on from the verified 89); every check right
    assert steps_of(VERIFIED) == [(True, True), (False, True), (False, True)]
    # the slip 35 is wrong and its fix right; then from the corrected 34: 36, 33, 34 right
    assert steps_of(FIXED) == [(False, True), (True, True), (True, None), (True, None)]
    # judged against its own previous value: 50 != 43+8; 44 = 50-6; 40 != 44-3; 38 = 40-2
    assert steps_of(PLAIN) == [(False, None), (True, None), (False, None), (True, None)]
    assert steps_of(" <think> mental math </think> <answer> 3 </answer>") == []


def test_analyse_and_cli(tmp_path, capsys):
    rows = [
        {"completion": VERIFIED, "correct": True},
        {"completion": PLAIN, "correct": False},
        {"completion": FIXED, "correct": True},
    ]
    r = analyse(rows)
    assert r["samples"] == 3 and abs(r["verifying"] - 2 / 3) < 1e-12 and r["steps"] == 11
    assert abs(r["step_right"] - 6 / 11) < 1e-12 and r["checks"] == 5 and r["check_right"] == 1.0
    assert r["pass1_verifying"] == 1.0 and r["pass1_others"] == 0.0
    f = tmp_path / "samples.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in rows))
    assert main([str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 11
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    for text, says in (
        ('{"completion": "x"}\nnot json\n', "bad.jsonl:2: not JSON"),
        ('["a"]\n', "bad.jsonl:1: a list"),
    ):
        bad.write_text(text)
        assert main([str(f), str(bad)]) == 2
        out = capsys.readouterr()
        assert out.out == "" and len(out.err.strip().splitlines()) == 1 and says in out.err
