"""The headline of a run: held-out pass@1 before -> after, with intervals, from whatever the run wrote.

    headline(run_dir) -> Headline | None      headline_text(run_dir) -> "held-out pass@1 0.419 [...] -> ..."

Sources, first found wins: summary.json of `aha demo` (its before/after evaluations, with bootstrap
intervals), metrics.jsonl of `aha train` / `aha sft` (the first and the last `eval/pass1`, with
`eval/pass1_lo` / `eval/pass1_hi` when the evaluation bootstrapped), results.json of `aha eval` (one figure).
`aha report` opens its page with it and the CLI prints it when a command ends.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

Figure = tuple[float, float | None, float | None]  # (value, interval low, interval high)


@dataclass
class Headline:
    label: str  # what was measured, e.g. "held-out pass@1 (200 problems x 4 samples)"
    after: Figure
    before: Figure | None = None
    steps: tuple[float, float] | None = None  # the steps of before and after (training runs)
    rows: list[tuple[str, Figure | None, Figure]] | None = None  # more before/after figures (demo)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _figure(v, ci=None) -> Figure:
    lo, hi = (ci or (None, None))[:2] if isinstance(ci, (list, tuple)) else (None, None)
    return (float(v), lo if _finite(lo) else None, hi if _finite(hi) else None)


def _metrics_rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a half-written last line of a running job
        if isinstance(rec, dict) and _finite(rec.get("step")):
            rows.append(rec)
    return rows


def held_out_curve(run_dir) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(step, eval/pass1) of the first and the last held-out evaluation in metrics.jsonl (None if none);
    a resumed run's re-logged step counts once (the later line)."""
    by_step = {
        r["step"]: r["eval/pass1"]
        for r in _metrics_rows(Path(run_dir))
        if _finite(r.get("eval/pass1"))
    }
    if not by_step:
        return None, None
    steps = sorted(by_step)
    return (steps[0], by_step[steps[0]]), (steps[-1], by_step[steps[-1]])


def headline(run_dir) -> Headline | None:
    run = Path(run_dir)
    s = _read_json(run / "summary.json")
    if isinstance(s, dict) and _finite(s.get("pass1_before")) and _finite(s.get("pass1_after")):
        rows = [
            (name, _figure(s[f"{key}_before"]), _figure(s[f"{key}_after"]))
            for name, key in (("format", "format"), ("length (tokens)", "len"))
            if _finite(s.get(f"{key}_before")) and _finite(s.get(f"{key}_after"))
        ]
        return Headline(
            "held-out pass@1",
            _figure(s["pass1_after"], s.get("pass1_after_ci")),
            _figure(s["pass1_before"], s.get("pass1_before_ci")),
            rows=rows,
        )
    evals = {}
    for r in _metrics_rows(run):
        if _finite(r.get("eval/pass1")):
            evals[r["step"]] = r
    if evals:
        steps = sorted(evals)
        first, last = evals[steps[0]], evals[steps[-1]]

        def fig(r):
            return _figure(r["eval/pass1"], (r.get("eval/pass1_lo"), r.get("eval/pass1_hi")))

        return Headline(
            "held-out pass@1",
            fig(last),
            fig(first) if len(steps) > 1 else None,
            steps=(steps[0], steps[-1]),
        )
    res = _read_json(run / "results.json")
    if isinstance(res, dict) and isinstance(res.get("metrics"), dict):
        m, ci = res["metrics"], res.get("ci") or {}
        if _finite(m.get("pass1")):
            label = f"pass@1 ({res.get('n_problems')} problems x {res.get('k')} samples)"
            return Headline(label, _figure(m["pass1"], ci.get("pass1")))
    return None


def fmt(f: Figure) -> str:
    v, lo, hi = f
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def headline_text(run_dir) -> str:
    """One line, or "" when the run has no held-out figure."""
    h = headline(run_dir)
    if h is None:
        return ""
    if h.before is None:
        at = f" at step {h.steps[1]:g}" if h.steps else ""
        return f"{h.label}: {fmt(h.after)}{at}"
    steps = (
        f" (step {h.steps[0]:g} -> {h.steps[1]:g})" if h.steps else " (before -> after training)"
    )
    return f"{h.label}: {fmt(h.before)} -> {fmt(h.after)}{steps}"
