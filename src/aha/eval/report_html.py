"""The HTML sections of `aha report`'s page (aha.eval.report draws the plots and assembles the page): the
headline (held-out pass@1 before -> after), the final figures of summary.json (a pipeline's: its stages),
aha eval's results.json, and sample completions. Everything from the run is HTML-escaped."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

_MAX_TEXT = 4000  # characters of one prompt/completion shown on the page


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _config_value(path: Path, section: str, key: str):
    """A run's config.yaml value section.key; None when the file is missing, unreadable or of another shape."""
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return None
    part = cfg.get(section) if isinstance(cfg, dict) else None
    return part.get(key) if isinstance(part, dict) else None


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError:
        return None


def summary_section(path: Path) -> list[str]:
    """summary.json: each X_before / X_after pair as one before -> after row (with X_*_ci intervals), then
    the other figures. The curves it also holds (*_curve) are drawn in the plots, not printed."""
    data = _read_json(path)
    if not isinstance(data, dict):
        return []
    shown = {k for k in data if k.endswith("_curve")}
    pairs = []
    for k in data:
        name = k[: -len("_before")] if k.endswith("_before") else None
        if name and f"{name}_after" in data:
            b, a = data[k], data[f"{name}_after"]
            pairs.append(
                f"<tr><th>{_e(name)}</th><td>{_e(_with_ci(b, data.get(name + '_before_ci')))}</td>"
                f"<td>{_e(_with_ci(a, data.get(name + '_after_ci')))}</td></tr>"
            )
            shown |= {k, f"{name}_after", f"{name}_before_ci", f"{name}_after_ci"}
    rest = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>"
        for k, v in data.items()
        if k not in shown
    )
    out = ["<h2 id='summary'>Final figures</h2>"]
    if pairs:
        out.append(
            "<table class='kv'><tr><th></th><th>before</th><th>after</th></tr>"
            + "".join(pairs)
            + "</table>"
        )
    if rest:
        out.append(f"<table class='kv'>{rest}</table>")
    return out


def pipeline_section(run: Path, data: dict) -> list[str]:
    """A pipeline folder's summary.json: the held-out pass@1 of the first and last evaluated stage as the
    headline, one row per stage (its evaluation, time, where its own report is), and summary.png."""
    stages = [s for s in data.get("stages") or [] if isinstance(s, dict)]
    evals = [(s, _dict(_dict(s.get("figures")).get("eval"))) for s in stages]
    evals = [(s, e) for s, e in evals if "pass1" in e]
    out = []
    if evals:
        (s0, e0), (s1, e1) = evals[0], evals[-1]
        first = _with_ci(e0["pass1"], e0.get("pass1_ci"))
        last = f"<b>{_e(_with_ci(e1['pass1'], e1.get('pass1_ci')))}</b>"
        out += [
            f"<p class='headline'>{_e(data.get('pipeline', 'pipeline'))}: held-out pass@1 "
            + (f"{_e(first)} &rarr; {last}" if len(evals) > 1 else last)
            + "</p>",
            f"<p class='meta'>{_e(s0.get('stage'))} &rarr; {_e(s1.get('stage'))}, "
            f"{_e(e1.get('n_problems'))} problems &times; k = {_e(e1.get('k'))} "
            "&middot; [95% bootstrap interval over problems]</p>",
        ]
    rows = []
    for s in stages:
        ev = _dict(_dict(s.get("figures")).get("eval"))
        own = _dict(s.get("outputs")).get("run")
        where = ""
        if own:  # the stage's training run: its own report, or the command that makes it
            page = Path(own) / "report" / "index.html"
            rel = os.path.relpath(page, run) if page.is_file() else None
            where = f"<a href='{_e(rel)}'>report</a>" if rel else f"aha report {_e(own)}"
        rows.append(
            f"<tr><th>{_e(s.get('stage'))}</th><td>{_e(s.get('kind'))}</td>"
            f"<td>{_e(_with_ci(ev['pass1'], ev.get('pass1_ci')) if 'pass1' in ev else '')}</td>"
            f"<td>{_e(_fmt(ev.get('format', '')))}</td><td>{_e(_fmt(ev.get('len_mean', '')))}</td>"
            f"<td>{_e(_fmt(s.get('seconds', '')))}</td><td>{where}</td></tr>"
        )
    out += [
        "<h2 id='stages'>Stages</h2><table class='kv'><tr><th>stage</th><th>kind</th><th>pass@1</th>"
        "<th>format</th><th>length</th><th>seconds</th><th>its run</th></tr>"
        + "".join(rows)
        + "</table>"
    ]
    png = run / "summary.png"
    if png.is_file():
        data64 = base64.b64encode(png.read_bytes()).decode("ascii")
        out.append(f"<figure><img src='data:image/png;base64,{data64}' alt='stages'></figure>")
    return out


def _dict(x) -> dict:
    return (
        x if isinstance(x, dict) else {}
    )  # a hand-edited or truncated summary.json: show what is there


def _with_ci(v, ci) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f"{_fmt(v)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"
    return _fmt(v)


def headline_section(run: Path) -> list[str]:
    """The page's opening line: held-out pass@1 before -> after, with intervals (aha.eval.headline)."""
    from .headline import fmt, headline

    h = headline(run)
    if h is None:
        return _no_eval_note(run)
    after = f"<b>{_e(fmt(h.after))}</b>"
    line = f"{_e(h.label)}: " + (f"{_e(fmt(h.before))} &rarr; {after}" if h.before else after)
    if h.steps and h.before:
        note = f"step {h.steps[0]:g} &rarr; step {h.steps[1]:g}"
    elif h.steps:
        note = f"at step {h.steps[1]:g}"
    else:
        note = "before and after training" if h.before else ""
    intervals = any(f[1] is not None for f in (h.before, h.after) if f)
    note += " &middot; [95% bootstrap interval over problems]" if intervals else ""
    return [f"<p class='headline'>{line}</p>", f"<p class='meta'>{note}</p>"]


def _no_eval_note(run: Path) -> list[str]:
    """A training run without a headline because it evaluated nothing (eval.limit=0): say so and how."""
    if _config_value(run / "config.yaml", "eval", "limit") != 0:
        return []
    return [
        "<p class='meta'>no held-out evaluation: eval.limit=0; set eval.limit=N (the first N test "
        "problems) for pass@1 before and after training</p>"
    ]


def results_section(path: Path) -> list[str]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        return []
    ci = data.get("ci") or {}
    rows = []
    for name, v in data["metrics"].items():
        lo_hi = ci.get(name) or [None, None]
        interval = f"[{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]" if None not in lo_hi else ""
        rows.append(f"<tr><th>{_e(name)}</th><td>{_e(_fmt(v))}</td><td>{_e(interval)}</td></tr>")
    head = (
        f"<p>{_e(data.get('n_problems'))} problems &times; k = {_e(data.get('k'))} samples; "
        f"95% bootstrap intervals over problems.</p>"
    )
    return [
        "<h2 id='eval'>Evaluation</h2>",
        head,
        "<table class='kv'><tr><th>metric</th><th>value</th><th>interval</th></tr>"
        + "".join(rows)
        + "</table>",
    ]


def _load_samples(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    recs = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                recs.append(rec)
    return recs


def samples_section(path: Path, n: int, missing: str = "") -> list[str]:
    """Completions of the first and last sampled step; none stored: `missing` (why), or nothing."""
    recs = _load_samples(path)
    if n <= 0 or not (recs or missing):
        return []
    out = ["<h2 id='samples'>Sampled completions</h2>"]
    if not recs:
        return [*out, f"<p class='meta'>{_e(missing)}</p>"]
    stepped = [r for r in recs if _is_number(r.get("step"))]
    if stepped:
        first, last = min(r["step"] for r in stepped), max(r["step"] for r in stepped)
        groups = [(f"Before: step {first}", [r for r in stepped if r["step"] == first][:n])]
        if last != first:
            groups.append((f"After: step {last}", [r for r in stepped if r["step"] == last][:n]))
    else:
        groups = [("Samples", recs[:n])]
    for title, items in groups:
        out.append(f"<h3>{_e(title)}</h3>")
        for r in items:
            meta = " &middot; ".join(
                f"{_e(k)} {_e(_fmt(r[k]))}"
                for k in ("reward", "correct", "answer", "reference", "n_tokens", "finish_reason")
                if k in r
            )
            out.append(
                f"<div class='sample'><div class='meta'>{meta}</div>"
                f"<pre class='prompt'>{_e(_clip(r.get('prompt', r.get('question', ''))))}</pre>"
                f"<pre class='completion'>{_e(_clip(r.get('completion', '')))}</pre></div>"
            )
    return out


def no_samples_note(files: dict, series: dict) -> str:
    """Why an RL run (its config has logging.samples_every) has no samples.jsonl: a 2-step run with
    samples_every=10 stores none. Other runs (eval, SFT, pretraining) get no note."""
    if not files["metrics.jsonl"].is_file():
        return ""
    every = _config_value(files["config.yaml"], "logging", "samples_every")
    if every == 0:
        return "none stored: logging.samples_every=0 turns them off"
    if not isinstance(every, int):
        return ""
    last = max((pts[-1][0] for pts in series.values() if pts), default=None)  # (step, value) pairs
    ran = f", and the run's last logged step is {last:g}" if last is not None else ""
    return (
        f"none stored: completions are kept every logging.samples_every={every} steps{ran}; "
        "a lower value stores them"
    )


def _clip(text) -> str:
    text = str(text)
    return (
        text
        if len(text) <= _MAX_TEXT
        else text[:_MAX_TEXT] + f" ... [{len(text) - _MAX_TEXT} more characters]"
    )


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1320px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#666;font-size:.9em}
table.kv{border-collapse:collapse;font-size:.92em}table.kv th,table.kv td{border:1px solid #ddd;padding:.25em .6em;
text-align:left}table.kv th{background:#f6f6f6;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;border:1px solid #eee;padding:4px}
figure img{display:block;width:640px;max-width:100%;height:auto}
.sample{border:1px solid #e3e3e3;border-radius:4px;margin:.6em 0;padding:.4em .6em}
pre{white-space:pre-wrap;word-break:break-word;margin:.3em 0;font-size:.85em}
pre.prompt{color:#777;max-height:8em;overflow:auto}pre.completion{background:#f8f8f4;padding:.4em}
pre.config{background:#f6f6f6;padding:.6em;font-size:.82em}
p.headline{font-size:1.35em;margin:.6em 0 .1em}
"""
