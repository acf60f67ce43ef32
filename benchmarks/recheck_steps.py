"""How right are a chain-task model's written steps and its re-checks? Reads evaluation samples (JSONL).

For `aha demo --recheck` (tiny-recheck): a completion writes the chain one operation at a time,
"87+8-6+7 = 95-6+7 (verify: 87+8 = 95) = 89+7 ...", and may verify a step or catch a slip
("94-6+7, wait, no: 87+8 = 95, so 95-6+7"). Per file this prints:

    samples      completions read
    verifying    share with at least one "(verify: ...)"
    steps        rewritten steps parsed: a segment whose tail is the previous segment's after its first operation
    step right   share of those whose head equals (previous value) op (first operand), where the previous value
                 is the one the chain goes on from: the verified value when the previous step was verified or
                 corrected, else the written head
    check right  share of "(verify: a op b = c)" and "wait, no: a op b = c" with c = a op b
    pass@1 | verifying / others   accuracy of the completions that verify and of the rest

    python benchmarks/recheck_steps.py runs/demo-*/eval_before/samples.jsonl runs/demo-*/eval_after/samples.jsonl
    python benchmarks/recheck_steps.py runs/eval-x/samples.jsonl --json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

CHAIN = re.compile(r"^(\d+)((?:[+-]\d+)*)$")
CHECK = re.compile(r"(?:\(verify: |wait, no: )(\d+)([+-])(\d+) = (\d+)")
# Inside a check, " = " becomes " == " before the think text is split into steps at " = ".
INNER = re.compile(r"((?:\(verify|wait, no): \d+[+-]\d+) = ")
FIX = re.compile(r"^(\d+(?:[+-]\d+)*), wait, no: (\d+)([+-])(\d+) == (\d+), so (\d+(?:[+-]\d+)*)$")
VERIFY = re.compile(r"^(\d+(?:[+-]\d+)*) \(verify: (\d+)([+-])(\d+) == (\d+)\)$")


def apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def think(text: str) -> str:
    m = re.search(r"<think>(.*?)</think>", text, re.S)
    return (m.group(1) if m else "").strip()


def steps_of(text: str) -> list[tuple[bool, bool | None]]:
    """(step right, its check right or None) for each rewritten step of one completion (see the docstring)."""
    out, prev = [], None  # prev: (value the chain goes on from, its tail "+8-6+7")
    for part in INNER.sub(r"\1 == ", think(text)).split(" = "):
        written, check, goes_on = part, None, None
        if m := VERIFY.match(part):
            written, (a, op, b, c) = m.group(1), m.groups()[1:]
            check = (int(a), op, int(b), int(c))
        elif m := FIX.match(part):
            written, (a, op, b, c), goes_on = m.group(1), m.groups()[1:5], m.group(6)
            check = (int(a), op, int(b), int(c))
        m = CHAIN.match(written)
        if not m:
            prev = None
            continue
        head, tail = int(m.group(1)), m.group(2)
        if prev is not None:
            (value, ptail) = prev
            first = re.match(r"([+-])(\d+)", ptail)
            if first and ptail[first.end() :] == tail:
                right = head == apply(value, first.group(1), int(first.group(2)))
                out.append((right, None if check is None else apply(*check[:3]) == check[3]))
        if goes_on is not None:
            g = CHAIN.match(goes_on)
            prev = (int(g.group(1)), g.group(2)) if g else None
        else:
            prev = (check[3] if check is not None else head, tail)
    return out


def analyse(rows: list[dict]) -> dict:
    steps = [s for r in rows for s in steps_of(r.get("completion", ""))]
    ver = [r for r in rows if "(verify: " in r.get("completion", "")]
    rest = [r for r in rows if "(verify: " not in r.get("completion", "")]
    acc = lambda rs: sum(bool(r.get("correct")) for r in rs) / len(rs) if rs else None  # noqa: E731
    checks_all = [
        apply(int(a), op, int(b)) == int(c)
        for r in rows
        for a, op, b, c in CHECK.findall(think(r.get("completion", "")))
    ]
    return {
        "samples": len(rows),
        "verifying": len(ver) / len(rows) if rows else None,
        "steps": len(steps),
        "step_right": sum(s for s, _ in steps) / len(steps) if steps else None,
        "checks": len(checks_all),
        "check_right": sum(checks_all) / len(checks_all) if checks_all else None,
        "pass1_verifying": acc(ver),
        "pass1_others": acc(rest),
    }


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def read_rows(f: Path) -> list[dict]:
    """The JSON objects of a samples.jsonl; ValueError with a one-line message naming the file and line."""
    if not f.is_file():
        raise ValueError(
            f"{f}: no such file; pass the samples.jsonl of an `aha eval` or of a demo's eval_before/ "
            "or eval_after/"
        )
    rows = []
    for n, line in enumerate(f.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{f}:{n}: not JSON ({e.msg}); each line must be one sample object"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(
                f"{f}:{n}: a {type(row).__name__}, not an object with a 'completion' field"
            )
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "files", nargs="+", type=Path, help="samples.jsonl files (aha eval / aha demo eval_*/)"
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object per file instead of a table"
    )
    a = p.parse_args(argv)
    cols = [
        "samples",
        "verifying",
        "steps",
        "step_right",
        "checks",
        "check_right",
        "pass1_verifying",
        "pass1_others",
    ]
    try:
        files = [(f, read_rows(f)) for f in a.files]  # every file checked before any output
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if not a.json:
        print("| file | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for f, rows in files:
        res = analyse(rows)
        print(
            json.dumps({"file": str(f), **res})
            if a.json
            else f"| {f} | " + " | ".join(fmt(res[c]) for c in cols) + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
