"""`aha report RUN_DIR`: PNG curves and one self-contained HTML page for a training run (or an eval directory).

Reads what exists of RUN_DIR/metrics.jsonl (one JSON object per line: "step" plus numeric keys),
config.yaml, summary.json, samples.jsonl (training: step, prompt, completion, reward; eval: one record per
sample) and results.json (aha eval), and writes RUN_DIR/report/<panel>.png plus RUN_DIR/report/index.html.
The page opens with the headline (held-out pass@1 before -> after, with intervals: aha.eval.headline), then
the final figures, the plots (every one from step 0, where the step-0 held-out evaluation sits), samples and
the config (the sections: aha.eval.report_html). It embeds every plot as a base64 PNG and holds no script and
no external link, so it opens from disk in any browser, mailed or archived alone. All text from the run is
HTML-escaped.

Panels are drawn only for keys that exist; keys no panel claims are grouped by their prefix ("time/*", ...).
Malformed lines (e.g. the half-written last line of a running job) and non-numeric values are skipped.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import math
from pathlib import Path

from .report_html import (
    CSS,
    _e,
    _read_json,
    headline_section,
    no_samples_note,
    pipeline_section,
    results_section,
    samples_section,
    summary_section,
)

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
        if "eval/pass1" in keys:
            claimed.update({"eval/pass1_lo", "eval/pass1_hi"})  # drawn as pass1's interval band
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
            if key == "eval/pass1" and "eval/pass1_lo" in series and "eval/pass1_hi" in series:
                lo, hi = dict(series["eval/pass1_lo"]), dict(series["eval/pass1_hi"])
                band = [(x, lo[x], hi[x]) for x in xs if x in lo and x in hi]
                if band:
                    bx, blo, bhi = zip(*band)
                    ax.fill_between(
                        bx, blo, bhi, alpha=0.2, linewidth=0, label="pass1 95% interval"
                    )
        if fraction:
            ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(
            left=min(0.0, *(x for k in keys for x, _ in series[k]))
        )  # every plot from step 0
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
        inner = run / "run"  # a pipeline stage's folder: its training run is one level down
        hint = (
            f" (its training run: aha report {inner})"
            if (inner / "metrics.jsonl").is_file()
            else ""
        )
        raise FileNotFoundError(
            f"'{run}' has no metrics.jsonl, summary.json or results.json; pass a run "
            f"directory written by `aha train`, `aha eval` or `aha pipeline`{hint}"
        )
    out = Path(out_dir) if out_dir is not None else run / "report"
    series, skipped = (
        load_metrics(files["metrics.jsonl"]) if files["metrics.jsonl"].is_file() else ({}, 0)
    )
    plots = plot_metrics(series, out)
    summary = _read_json(files["summary.json"])
    pipeline = isinstance(summary, dict) and "pipeline" in summary
    stages = summary["stages"] if pipeline and isinstance(summary.get("stages"), list) else None
    what = (
        f"a pipeline of {len(stages)} stages"
        if stages is not None
        else f"{len(series)} logged metrics"
    )
    body = [
        f"<h1>aha report: {_e(run.resolve().name)}</h1>",
        f"<p class='meta'>{_e(str(run))} &middot; {what}"
        + (f" &middot; {skipped} malformed metrics lines skipped" if skipped else "")
        + "</p>",
    ]
    if stages is not None:  # a pipeline folder: its stages, not a dump of summary.json
        body += pipeline_section(run, summary)
    else:
        body += headline_section(run)
        body += summary_section(files["summary.json"])
    body += results_section(files["results.json"])
    if plots:
        body.append("<h2 id='curves'>Curves</h2><div class='plots'>")
        for title, path in plots:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            body.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{_e(title)}'></figure>"
            )
        body.append("</div>")
    body += samples_section(files["samples.jsonl"], n_samples, no_samples_note(files, series))
    if files["config.yaml"].is_file():
        body.append(
            "<h2 id='config'>Config</h2><pre class='config'>"
            + _e(files["config.yaml"].read_text(errors="replace"))
            + "</pre>"
        )
    page = (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>aha report: {_e(run.resolve().name)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
