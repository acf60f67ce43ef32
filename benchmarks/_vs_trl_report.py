"""The report of benchmarks/vs_trl.py (and of its --merge of earlier runs): per-run summaries, a markdown table
per arm (mean ± std over seeds), the TRL / aha time ratios, the reward-curve agreement, curves.csv,
results.json and reward_curves.png."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from _common import spread

COLUMNS = [  # (key, header)
    ("step_s", "step s"),
    ("generate_s", "generate s"),
    ("reward_s", "reward s"),
    ("update_s", "update+rest s"),
    ("reward_first5", "reward first 5"),
    ("reward_last5", "reward last 5"),
    ("reward_all", "reward all steps"),
    ("len", "completion len"),
    ("pass1", "held-out pass@1"),
    ("format", "held-out format"),
    ("wall_s", "train wall s"),
]


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.mean(xs) if xs else None


def _median_after_first(xs) -> float | None:
    """Median over steps 2..N (step 1 pays warm-up: CUDA graphs, allocator, kernels); step 1 if alone."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs[1:] if len(xs) > 1 else xs) if xs else None


def summarize(run: dict) -> dict:
    c = run["curve"]
    col = lambda k: [s.get(k) for s in c]
    step, gen, rew = (_median_after_first(col(k)) for k in ("step_s", "generate_s", "reward_s"))
    rest = [
        s["step_s"] - (s.get("generate_s") or 0.0) - (s.get("reward_s") or 0.0)
        for s in c
        if s.get("step_s") is not None
    ]
    return {
        "step_s": step,
        "generate_s": gen,
        "reward_s": rew,
        "update_s": _median_after_first(rest),
        "reward_first5": _mean(col("reward")[:5]),
        "reward_last5": _mean(col("reward")[-5:]),
        "reward_all": _mean(col("reward")),
        "len": _mean(col("len")),
        "pass1": run["eval"]["pass1"],
        "format": run["eval"]["format"],
        "wall_s": run["info"].get("wall_s"),
    }


def _table(arm: str, runs: list[dict]) -> list[str]:
    lines = [
        f"### {arm}",
        "",
        "| seed | " + " | ".join(h for _, h in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for r in runs:
        cells = [_fmt(r["summary"][k]) for k, _ in COLUMNS]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + " |")
    if len(runs) > 1:
        cells = [spread([r["summary"][k] for r in runs]) for k, _ in COLUMNS]
        lines.append("| mean ± std (min..max) | " + " | ".join(cells) + " |")
    return lines + [""]


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def compare(by_arm: dict[str, list[dict]]) -> dict:
    """TRL / aha step-time ratios (per seed, from the same run) and the reward agreement: the difference of the
    seed means of the whole-curve mean reward against two standard errors of that difference."""
    if not {"aha", "trl"} <= by_arm.keys():
        return {}
    aha = {r["seed"]: r["summary"] for r in by_arm["aha"]}
    trl = {r["seed"]: r["summary"] for r in by_arm["trl"]}
    seeds = sorted(aha.keys() & trl.keys())
    ratio = {
        k: [trl[s][k] / aha[s][k] for s in seeds if trl[s][k] and aha[s][k]]
        for k in ("step_s", "generate_s", "wall_s")
    }
    out = {"seeds": seeds, "ratio": ratio}
    for key in ("reward_all", "reward_last5", "pass1"):
        xa = [aha[s][key] for s in aha if aha[s][key] is not None]
        xt = [trl[s][key] for s in trl if trl[s][key] is not None]
        if not xa or not xt:
            continue
        diff = statistics.mean(xt) - statistics.mean(xa)
        se = None
        if len(xa) > 1 and len(xt) > 1:
            se = math.sqrt(statistics.variance(xa) / len(xa) + statistics.variance(xt) / len(xt))
        out[key] = {"trl_minus_aha": diff, "two_se": None if se is None else 2 * se}
    return out


def _comparison_lines(cmp: dict) -> list[str]:
    if not cmp:
        return []
    lines = ["### TRL / aha", ""]
    for k, name in (
        ("step_s", "step time"),
        ("generate_s", "generate time"),
        ("wall_s", "train wall"),
    ):
        if cmp["ratio"][k]:
            per_seed = ", ".join(f"{x:.2f}" for x in cmp["ratio"][k])
            lines.append(
                f"- {name}: {statistics.mean(cmp['ratio'][k]):.2f}x (per seed: {per_seed})"
            )
    for key, name in (
        ("reward_all", "mean reward over all steps"),
        ("reward_last5", "reward last 5 steps"),
        ("pass1", "held-out pass@1"),
    ):
        if key in cmp:
            d, two_se = cmp[key]["trl_minus_aha"], cmp[key]["two_se"]
            if two_se is None:
                lines.append(f"- {name}: TRL - aha = {d:+.3f} (one seed: no spread)")
            else:
                verdict = "within" if abs(d) <= two_se else "OUTSIDE"
                lines.append(
                    f"- {name}: TRL - aha = {d:+.3f}, 2 standard errors {two_se:.3f}: {verdict} the seed spread"
                )
    return lines + [""]


def write_curves(path: Path, runs: list[dict]) -> None:
    keys = sorted({k for r in runs for s in r["curve"] for k in s} - {"step"})
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "step", *keys])
        for r in runs:
            for s in r["curve"]:
                w.writerow([r["arm"], r["seed"], s["step"], *[s.get(k) for k in keys]])


def plot(path: Path, by_arm: dict[str, list[dict]], title: str) -> None:
    """Reward and completion length per step: the mean over seeds, with a min..max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, runs in by_arm.items():
        for ax, key in zip(axes, ("reward", "len")):
            n = min(len(r["curve"]) for r in runs)
            y = np.array(
                [[np.nan if s.get(key) is None else s[key] for s in r["curve"][:n]] for r in runs]
            )  # (seeds, steps)
            x = np.arange(1, n + 1)
            line = ax.plot(x, np.nanmean(y, 0), label=f"{arm} ({len(runs)} seeds)")[0]
            if len(runs) > 1:
                ax.fill_between(
                    x, np.nanmin(y, 0), np.nanmax(y, 0), color=line.get_color(), alpha=0.2
                )
    for ax, name in zip(axes, ("mean reward", "mean completion length (tokens)")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, settings: dict, base: dict, runs: list[dict]) -> dict:
    for r in runs:
        r["summary"] = summarize(r)
    by_arm: dict[str, list[dict]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], []).append(r)
    cmp = compare(by_arm)
    s = settings
    head = (
        f"{s['model']} on {s['task']} {s['task_options']}, template {s['template']}; {s['prompts']} prompts x "
        f"{s['group']} samples, {s['max_new_tokens']} new tokens, lr {s['lr']}, beta {s['beta']}, "
        f"T {s['temperature']}, {s['steps']} steps, micro-batch {s['micro']}; {s['device_name']}; "
        + ", ".join(f"{k} {v}" for k, v in s["versions"].items() if v)
    )
    lines = [
        "## aha vs TRL GRPOTrainer",
        "",
        head,
        "",
        f"Held-out eval: {s['eval_size']} test problems x {s['eval_k']} samples, T {s['eval_temperature']}, "
        f"top-p {s['eval_top_p']}. Base model: pass@1 {base['pass1']:.3f}, format {base['format']:.3f}. "
        "Step times: median over steps 2..N.",
        "",
    ]
    for arm, rs in by_arm.items():
        lines += _table(arm, rs)
    lines += _comparison_lines(cmp)
    for r in runs:
        if r["arm"] == "trl":
            i = r["info"]
            lines.append(
                f"- TRL seed {r['seed']}: wrapped rewards equal aha's on {i['reward_check']['completions']} "
                f"hand-written completions (mean total {i['reward_check']['total_mean']:.3f}, max diff "
                f"{i['reward_check']['max_abs_diff']:.1e}); prompt tokens "
                f"identical: {i['prompt_tokens_identical']}; TRL stops at eos ids {i['eos_ids']}"
            )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    write_curves(out / "curves.csv", runs)
    result = {"settings": settings, "base_eval": base, "runs": runs, "compare": cmp}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    plot(out / "reward_curves.png", by_arm, head[:160])
    print(text, flush=True)
    return result


def merge(dirs: list[str], out: Path) -> dict:
    """One report over the runs of several earlier --out dirs (e.g. one seed per device call)."""
    parts = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    runs = [r for p in parts for r in p["runs"]]
    keys = [(r["arm"], r["seed"]) for r in runs]
    if len(set(keys)) != len(keys):
        raise SystemExit(f"--merge: an (arm, seed) run appears twice in {dirs}")
    ignore = {"seeds", "out", "merge", "model"}
    settings = parts[0]["settings"]
    for d, p in zip(dirs[1:], parts[1:]):
        diff = [k for k in settings if k not in ignore and p["settings"].get(k) != settings[k]]
        if diff:
            raise SystemExit(f"--merge: {d} was run with other settings ({', '.join(diff)})")
    settings["seeds"] = sorted({r["seed"] for r in runs})
    return write_report(out, settings, parts[0]["base_eval"], runs)
