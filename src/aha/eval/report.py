"""`aha report RUN_DIR`: PNG curves and one self-contained HTML page for a training run (or an eval directory).

Reads what exists of RUN_DIR/metrics.jsonl (one JSON object per line: "step" plus numeric keys),
config.yaml, summary.json, samples.jsonl (training: step, prompt, completion, reward; eval: one record per
sample) and results.json (aha eval), and writes RUN_DIR/report/<panel>.png plus RUN_DIR/report/index.html.
The page embeds every plot as a base64 PNG and holds no script and no external link, so it opens from disk
in any browser, mailed or archived alone. All text from the run is HTML-escaped.

Panels are drawn only for keys that exist; keys no panel claims are grouped by their prefix ("time/*", ...).
Malformed lines (e.g. the half-written last line of a running job) and non-numeric values are skipped.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
import math
from pathlib import Path

__all__ = ["make_report", "load_metrics", "plot_metrics", "PANELS"]

# (file stem, title, key patterns, values are fractions in [0, 1]). A key may appear in several of these
# panels (reward/accuracy is both a reward function and the training accuracy); "reward/std" is drawn as a
# band around "reward/mean".
PANELS: list[tuple[str, str, list[str], bool]] = [
    ("reward", "Reward (mean ± std)", ["reward/mean"], False),
    ("reward_functions", "Reward functions (batch mean)", ["reward/*"], False),
    (
        "accuracy",
        "Accuracy (training reward, held-out eval)",
        ["reward/accuracy", "eval/pass1", "eval/cons@*", "eval/pass@*"],
        True,
    ),
    ("format", "Format compliance", ["reward/format", "eval/format"], True),
    ("length", "Response length (tokens)", ["len/*", "eval/len_*"], False),
    ("entropy", "Entropy (nats/token)", ["entropy", "entropy/*"], False),
    ("kl", "KL to reference", ["kl", "kl/*"], False),
    (
        "reflection",
        "Reflection: re-checking phrases and revised answers",
        ["eval/reflection_rate", "eval/revision_rate", "reflection*", "revision*"],
        True,
    ),
    (
        "truncated",
        "Truncated at max tokens (fraction)",
        ["frac_truncated", "len/truncated", "eval/truncated"],
        True,
    ),
    ("clip", "Clipped tokens (fraction)", ["clip/*", "clip_frac*"], False),
    ("time", "Time per step (s)", ["time/*"], False),
]
_NOT_A_FUNCTION = {
    "reward/mean",
    "reward/std",
    "reward/timeouts",
    "reward/errors",
    "reward/min",
    "reward/max",
}
_MAX_OTHER_PANELS = 12
_MAX_TEXT = 4000  # characters of one prompt/completion shown on the page


def load_metrics(path: str | Path) -> tuple[dict[str, list[tuple[float, float]]], int]:
    """metrics.jsonl -> ({key: [(step, value), ...] sorted by step}, number of lines skipped).
    A later line for the same (step, key) replaces an earlier one (a resumed run re-logs steps)."""
    series: dict[str, dict[float, float]] = {}
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if not isinstance(rec, dict):
                skipped += 1
                continue
            step = rec.get("step", i)
            if not _is_number(step):
                skipped += 1
                continue
            for key, v in rec.items():
                if key != "step" and _is_number(v) and math.isfinite(v):
                    series.setdefault(key, {})[float(step)] = float(v)
    return {k: sorted(v.items()) for k, v in series.items()}, skipped


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _panel_keys(series: dict) -> list[tuple[str, str, list[str], bool]]:
    """The named panels that have data (in order), then one panel per prefix of the keys none of them drew."""
    claimed: set[str] = set()
    panels = []
    for stem, title, patterns, fraction in PANELS:
        keys = []
        for pat in patterns:
            for key in sorted(series):
                if key in keys or not fnmatch.fnmatchcase(key, pat):
                    continue
                if stem == "reward_functions" and key in _NOT_A_FUNCTION:
                    continue
                keys.append(key)
        if stem == "reward" and keys and "reward/std" in series:
            claimed.add("reward/std")  # drawn as the band around the mean
        if "eval/pass@1" in keys and "eval/pass1" in keys:
            keys.remove("eval/pass@1")  # the same number twice
            claimed.add("eval/pass@1")
        if keys:
            claimed.update(keys)
            panels.append((stem, title, keys, fraction))
    others: dict[str, list[str]] = {}
    for key in sorted(series):
        if (
            key not in claimed
        ):  # group by "prefix/" or, for flat names, the first word: frac_a, frac_b
            others.setdefault(key.split("/")[0] if "/" in key else key.split("_")[0], []).append(
                key
            )
    for prefix, keys in list(others.items())[:_MAX_OTHER_PANELS]:
        stem = "other_" + "".join(c if c.isalnum() else "_" for c in prefix)
        panels.append((stem, ", ".join(keys) if len(keys) <= 3 else prefix + "/*", keys, False))
    return panels


def plot_metrics(
    series: dict[str, list[tuple[float, float]]], out_dir: str | Path
) -> list[tuple[str, Path]]:
    """One PNG per panel that has data -> [(title, path)]. Uses matplotlib's Agg canvas, no pyplot state."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, title, keys, fraction in _panel_keys(series):
        fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for key in keys:
            xs, ys = zip(*series[key])
            sparse = len(xs) < 30 or key.startswith("eval/")
            ax.plot(xs, ys, marker="o" if sparse else None, markersize=3, linewidth=1.4, label=key)
            if stem == "reward" and key == "reward/mean" and "reward/std" in series:
                std = dict(series["reward/std"])
                lo = [y - std.get(x, 0.0) for x, y in zip(xs, ys)]
                hi = [y + std.get(x, 0.0) for x, y in zip(xs, ys)]
                ax.fill_between(xs, lo, hi, alpha=0.2, linewidth=0, label="± std")
        if fraction:
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        path = out / f"{stem}.png"
        fig.savefig(path, format="png", metadata={"Software": None})
        written.append((title, path))
    return written


def make_report(
    run_dir: str | Path, out_dir: str | Path | None = None, *, n_samples: int = 4
) -> Path:
    """Write the PNGs and the self-contained index.html for run_dir; returns the HTML path.

    out_dir defaults to RUN_DIR/report. n_samples: completions shown for the first and the last sampled step.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(
            f"run directory '{run}' does not exist; pass the directory `aha train` wrote"
        )
    files = {
        name: run / name
        for name in (
            "metrics.jsonl",
            "config.yaml",
            "summary.json",
            "samples.jsonl",
            "results.json",
        )
    }
    if not any(files[n].is_file() for n in ("metrics.jsonl", "summary.json", "results.json")):
        raise FileNotFoundError(
            f"'{run}' has no metrics.jsonl, summary.json or results.json; pass a run "
            "directory written by `aha train` or `aha eval`"
        )
    out = Path(out_dir) if out_dir is not None else run / "report"
    series, skipped = (
        load_metrics(files["metrics.jsonl"]) if files["metrics.jsonl"].is_file() else ({}, 0)
    )
    plots = plot_metrics(series, out)
    body = [
        f"<h1>aha report: {_e(run.resolve().name)}</h1>",
        f"<p class='meta'>{_e(str(run))} &middot; {len(series)} logged metrics"
        + (f" &middot; {skipped} malformed metrics lines skipped" if skipped else "")
        + "</p>",
    ]
    body += _summary_section(files["summary.json"])
    body += _results_section(files["results.json"])
    if plots:
        body.append("<h2 id='curves'>Curves</h2><div class='plots'>")
        for title, path in plots:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            body.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{_e(title)}'></figure>"
            )
        body.append("</div>")
    body += _samples_section(files["samples.jsonl"], n_samples)
    if files["config.yaml"].is_file():
        body.append(
            "<h2 id='config'>Config</h2><pre class='config'>"
            + _e(files["config.yaml"].read_text(errors="replace"))
            + "</pre>"
        )
    page = (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>aha report: {_e(run.resolve().name)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


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


def _summary_section(path: Path) -> list[str]:
    data = _read_json(path)
    if not isinstance(data, dict):
        return []
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in data.items())
    return ["<h2 id='summary'>Final figures</h2>", f"<table class='kv'>{rows}</table>"]


def _results_section(path: Path) -> list[str]:
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


def _samples_section(path: Path, n: int) -> list[str]:
    recs = _load_samples(path)
    if not recs or n <= 0:
        return []
    out = ["<h2 id='samples'>Sampled completions</h2>"]
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


def _clip(text) -> str:
    text = str(text)
    return (
        text
        if len(text) <= _MAX_TEXT
        else text[:_MAX_TEXT] + f" ... [{len(text) - _MAX_TEXT} more characters]"
    )


_CSS = """
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
"""
