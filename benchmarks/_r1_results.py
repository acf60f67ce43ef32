"""The table of benchmarks/r1_figures.py, read from the finished runs under OUT (nothing is rerun here).

Per seed, from each pipeline run's summary.json (stage -> figures): held-out pass@1, format compliance and mean
length of every evaluated stage, as rows of (a) R1 vs R1-Zero at equal RL steps and (b) distillation vs RL
alone on the student, plus compute notes (RL steps, SFT steps, teacher traces kept, sequences trained from
the stages' manifest.json). From the RL stages' metrics.jsonl: the in-training held-out pass@1 by RL step
(R1's second RL stage offset by its first one's steps). Prints markdown tables (mean ± std and min..max over
seeds) and writes OUT/results.json.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from _common import spread


def stages(run: Path) -> dict:
    """stage name -> its summary entry, for a finished pipeline run (empty when unfinished)."""
    p = run / "summary.json"
    return {s["stage"]: s for s in json.loads(p.read_text())["stages"]} if p.is_file() else {}


def eval_curve(metrics: Path, offset: int = 0) -> list[list[float]]:
    """[[RL step, held-out pass@1 of the in-training eval], ...] from a trainer's metrics.jsonl."""
    if not metrics.is_file():
        return []
    rows = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
    return [[r["step"] + offset, r["eval/pass1"]] for r in rows if "eval/pass1" in r]


def trained_sequences(stage_dir: Path) -> int | None:
    """Sequences through the model's forward+backward in a finished SFT or RL stage: steps x batch (SFT: examples
    per step; RL: prompts x samples per step), the student-side compute the distillation comparison matches."""
    m = (
        json.loads((stage_dir / "manifest.json").read_text())
        if (stage_dir / "manifest.json").is_file()
        else None
    )
    if not m:
        return None
    c, steps = m["config"], m["figures"].get("steps") or 0
    if m["kind"] == "rl":
        return steps * c["batch"]["prompts_per_step"] * c["sampling"]["group_size"]
    return steps * c["batch"]["batch_size"]


def collect(a) -> dict:
    """Per arm, per seed: held-out pass@1 / format / length of the evaluated stage, plus compute figures."""
    rows = {}  # (part, label) -> {seed: {...}}

    def put(part, label, seed, st, **more):
        ev = (st or {}).get("figures", {}).get("eval")
        if ev:
            rows.setdefault((part, label), {})[seed] = {
                "pass1": ev["pass1"],
                "format": ev["format"],
                "len": ev.get("len_mean"),
                "seconds": st.get("seconds"),
                **more,
            }

    curves = {}
    for s in a.seeds:
        z, r, d, srl = (
            stages(a.out / f"{k}-s{s}") for k in ("r1-zero", "r1", "distill", "student-rl")
        )
        rl_steps = (z.get("01-rl") or {}).get("figures", {}).get("steps")
        put("a", "base model (tiny-base)", s, z.get("00-base"))
        put("a", f"R1-Zero: GRPO {rl_steps} steps", s, z.get("01-rl"), rl_steps=rl_steps)
        n1 = (r.get("02-rl") or {}).get("figures", {}).get("steps")
        n2 = (r.get("05-rl") or {}).get("figures", {}).get("steps")
        put("a", "R1: cold-start SFT (0 RL steps)", s, r.get("01-cold-start"), rl_steps=0)
        put("a", f"R1: + GRPO ({n1} RL steps)", s, r.get("02-rl"), rl_steps=n1)
        kept = (r.get("03-sample") or {}).get("figures", {}).get("sample", {}).get("kept")
        put("a", "R1: + rejection-sampling SFT from base", s, r.get("04-sft"), sampled_rows=kept)
        put(
            "a",
            f"R1: + GRPO ({(n1 or 0) + (n2 or 0)} RL steps in all)",
            s,
            r.get("05-rl"),
            rl_steps=(n1 or 0) + (n2 or 0),
        )
        put("b", "teacher: tiny-base after R1-Zero GRPO", s, d.get("00-teacher"))
        put(
            "b",
            "student base (pretrained, no RL/SFT)",
            s,
            d.get("00-student") or srl.get("00-base"),
        )
        smp = (d.get("01-sample") or {}).get("figures", {}).get("sample", {})
        sft = (d.get("02-sft") or {}).get("figures", {})
        put(
            "b",
            "student distilled (SFT on teacher traces)",
            s,
            d.get("02-sft"),
            traces=smp.get("kept"),
            sft_steps=sft.get("steps"),
            sequences=trained_sequences(a.out / f"distill-s{s}" / "02-sft"),
        )
        srl_rl = srl.get("01-rl")
        steps = (srl_rl or {}).get("figures", {}).get("steps")
        put(
            "b",
            f"student RL alone (GRPO {steps} steps)",
            s,
            srl_rl,
            rl_steps=steps,
            sequences=trained_sequences(a.out / f"student-rl-s{s}" / "01-rl"),
        )
        curves[s] = {
            "r1-zero": eval_curve(a.out / f"r1-zero-s{s}" / "01-rl" / "run" / "metrics.jsonl"),
            "r1": eval_curve(a.out / f"r1-s{s}" / "02-rl" / "run" / "metrics.jsonl")
            + eval_curve(a.out / f"r1-s{s}" / "05-rl" / "run" / "metrics.jsonl", offset=n1 or 0),
            "student-rl": eval_curve(
                a.out / f"student-rl-s{s}" / "01-rl" / "run" / "metrics.jsonl"
            ),
        }
    return {"rows": rows, "curves": curves}


def table(a, log=print) -> dict:
    got = collect(a)
    title = {
        "a": "(a) R1 vs R1-Zero at equal RL steps (tiny-base, chain task, R1-Zero template)",
        "b": "(b) distillation vs RL alone on the student",
    }
    cfgs = (
        json.loads((a.out / "config.json").read_text()) if (a.out / "config.json").is_file() else {}
    )
    log(f"\nheld-out eval: {cfgs.get('eval', '?')}; mean ± std (min..max) over seeds {a.seeds}\n")
    results = {"config": cfgs, "arms": {}, "curves": got["curves"]}
    for part in ("a", "b"):
        log(f"{title[part]}\n")
        log("| model | seeds | held-out pass@1 | format compliance | length (tokens) | notes |")
        log("|---|---|---|---|---|---|")
        for (p, label), per_seed in got["rows"].items():
            if p != part:
                continue
            vals = list(per_seed.values())
            col = lambda k: [v[k] for v in vals if v.get(k) is not None]
            notes = []
            for k, name in (
                ("traces", "teacher traces kept"),
                ("sft_steps", "SFT steps"),
                ("sequences", "sequences trained (fwd+bwd)"),
                ("sampled_rows", "rejection-sampled rows"),
            ):
                if col(k):
                    notes.append(f"{name} {statistics.mean(col(k)):.0f}")
            lens = col("len")
            log(
                f"| {label} | {len(vals)} | {spread(col('pass1'))} | {spread(col('format'))} | "
                f"{statistics.mean(lens):.0f} | {', '.join(notes)} |"
                if lens
                else f"| {label} | {len(vals)} | {spread(col('pass1'))} | {spread(col('format'))} | n/a | |"
            )
            results["arms"][label] = {
                "part": part,
                "per_seed": per_seed,
                **{
                    f"{k}_{f.__name__}": f(col(k))
                    for k in ("pass1", "format")
                    if col(k)
                    for f in (statistics.mean, min, max)
                },
            }
        log("")
    curve = {}
    for arm in ("r1-zero", "r1", "student-rl"):
        pts = {}
        for c in got["curves"].values():
            for step, v in c[arm]:
                pts.setdefault(step, []).append(v)
        curve[arm] = sorted((st, statistics.mean(v)) for st, v in pts.items())
        if curve[arm]:
            log(
                f"in-training held-out pass@1 by RL step, {arm} (mean over seeds): "
                + " ".join(f"{st}:{v:.2f}" for st, v in curve[arm])
            )
    results["curve_means"] = curve
    (a.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    log(f"\nwrote {a.out / 'results.json'}")
    return results
