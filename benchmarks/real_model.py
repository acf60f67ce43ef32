"""The R1 story on a real pretrained model (issue 16): R1-Zero gets no signal, a cold start + GRPO does.

Jobs, one per seed S, run at once (each a `aha pipeline` command, resumable):

    zero-sS      aha pipeline r1-zero configs/pipeline_r1_zero_smollm2.yaml     accuracy + format, from the model
    zero-tag-sS  the same with the partial-credit `tag` reward in place of `format`
    r1-sS        aha pipeline r1 configs/pipeline_r1_smollm2.yaml               cold start -> GRPO -> sample ->
                                                                                SFT -> GRPO

Then one table: for every stage, held-out pass@1 scored strictly (the answer inside <answer> tags, what every
reward pays) and leniently (the last number of the completion, aha.rewards.answers, so an instruct model's
"The answer is 42." counts), format compliance and mean length, mean ± std (min..max) over seeds; and the
training curves (reward, length) of the RL stages. Written to OUT/table.md, OUT/results.json.

    python benchmarks/real_model.py run --model /path/SmolLM2-135M-Instruct.Q4_1.gguf --out runs/real \
        --seeds 0 1 2 --device cuda
    python benchmarks/real_model.py table --out runs/real
    python benchmarks/real_model.py run --task gsm8k --kinds zero,r1 --model ... --out runs/real-gsm8k \
        --set task.options.train=gsm8k/train.jsonl        # a local copy of GSM8K's train split (else the hub)
    python benchmarks/real_model.py run --model tiny-random --out /tmp/real --seeds 0 --toy   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs"
AHA = [sys.executable, "-m", "aha"]
SYSTEM = "task.system=null"  # --toy: tiny-random has no chat template
TOY = {
    "all": ["task.template=plain", SYSTEM, "eval.limit=4", "eval.k=2"]
    + ["eval.sampling.max_new_tokens=16"],
    "rl": ["steps=1", "batch.prompts_per_step=2", "sampling.group_size=2"]
    + [
        "batch.micro_batch_size=4",
        "sampling.max_new_tokens=16",
        "eval.limit=2",
        "logging.eval_every=0",
    ],
    "sft": ["steps=2", "batch.batch_size=4", "batch.micro_batch_size=4"],
    "sample": ["num_prompts=4", "k=2", "prompts_per_call=4", "sampling.max_new_tokens=16"],
}


# --task gsm8k: the R1 recipe of its own (a cold start from GSM8K's train solutions); R1-Zero is the arithmetic
# recipe pointed at GSM8K with the same lengths and evaluation.
R1_RECIPE = {"arithmetic": "pipeline_r1_smollm2.yaml", "gsm8k": "pipeline_r1_smollm2_gsm8k.yaml"}
ZERO_TASK = {
    "arithmetic": [],
    "gsm8k": ["task.name=gsm8k", "task.options={}", "rl.sampling.max_new_tokens=384"]
    + ["eval.limit=400", "eval.k=2", "eval.sampling.max_new_tokens=384"],
}


def jobs(a) -> dict[str, list[str]]:
    out, toy = Path(a.out), a.toy
    rl = lambda p: [f"{p}.{o}" for o in TOY["rl"]] if toy else []
    common = lambda s: [f"model={a.model}", f"seed={s}", *(TOY["all"] if toy else []), *a.set]
    got = {}
    for s in a.seeds:
        zero = [*AHA, "pipeline", "r1-zero", str(CFG / "pipeline_r1_zero_smollm2.yaml")]
        zero += [*ZERO_TASK[a.task], *common(s)]
        got[f"zero-s{s}"] = [*zero, f"out={out / f'zero-s{s}'}", *rl("rl")]
        tag = "rl.rewards.funcs=[{name: accuracy, weight: 1.0}, {name: tag, weight: 0.5}]"
        got[f"zero-tag-s{s}"] = [*zero, f"out={out / f'zero-tag-s{s}'}", tag, *rl("rl")]
        small = (
            ["cold_start_rows=8", *[f"{p}.{o}" for p in ("cold_start", "sft") for o in TOY["sft"]]]
            + [f"sample.{o}" for o in TOY["sample"]]
            + rl("rl")
            + rl("rl2")
            if toy
            else []
        )
        r1 = [*AHA, "pipeline", "r1", str(CFG / R1_RECIPE[a.task]), *common(s)]
        got[f"r1-s{s}"] = [*r1, f"out={out / f'r1-s{s}'}", *small]
    if (
        a.gib
    ):  # jobs share one GPU: each RL stage plans its memory within its share, not the whole device
        for name, argv in got.items():
            stages = ("rl",) if name.startswith("zero") else ("rl", "rl2")
            argv += [f"{st}.memory.max_memory_gib={a.gib}" for st in stages]
    kinds = set(a.kinds.split(","))
    return {name: argv for name, argv in got.items() if name.rsplit("-s", 1)[0] in kinds}


def run(a) -> None:
    out = Path(a.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    todo = {n: argv for n, argv in jobs(a).items() if not (out / n / "summary.json").is_file()}
    procs: dict[str, tuple[subprocess.Popen, float]] = {}
    while todo or procs:
        while todo and len(procs) < a.jobs:
            name, argv = todo.popitem()
            log = open(out / "logs" / f"{name}.log", "w")
            print(f"start {name}: {' '.join(argv[2:])}", flush=True)
            procs[name] = (
                subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT),
                time.time(),
            )
        time.sleep(2)
        for name, (p, t0) in list(procs.items()):
            if p.poll() is not None:
                print(f"{name}: exit {p.returncode} after {time.time() - t0:.0f} s", flush=True)
                del procs[name]
    table(a)


# ---- the table ------------------------------------------------------------------------------------------------
def stage_figures(eval_dir: Path) -> dict | None:
    """Strict and lenient pass@1, format, length from a stage's eval/samples.jsonl."""
    from aha.rewards.answers import answer_completion
    from aha.rewards.math import math_accuracy

    path = eval_dir / "samples.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    lenient = [
        math_accuracy(answer_completion(r["completion"], "last-number"), r["reference"])
        for r in rows
    ]
    mean = lambda xs: sum(xs) / len(xs)
    return {
        "pass1": mean([float(r["correct"]) for r in rows]),
        "pass1_lenient": mean(lenient),
        "format": mean([r["format"] or 0.0 for r in rows]),
        "length": mean([r["n_tokens"] for r in rows]),
        "truncated": mean([r["finish_reason"] == "length" for r in rows]),
    }


ROWS = [  # (label, job prefixes (the first that ran), stage directory)
    ("base model (chat template + R1-Zero instructions)", "zero,r1", "00-base"),
    ("a. R1-Zero: GRPO, accuracy + format", "zero", "01-rl"),
    ("b. R1-Zero: GRPO, accuracy + tag (partial credit)", "zero-tag", "01-rl"),
    ("c. R1: cold-start SFT", "r1", "01-cold-start"),
    ("c. R1: + GRPO", "r1", "02-rl"),
    ("c. R1: + rejection-sampling SFT (from the base)", "r1", "04-sft"),
    ("c. R1: + GRPO (second stage)", "r1", "05-rl"),
]


def spread(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f} ({min(xs):.2f}..{max(xs):.2f})"


def table(a) -> None:
    out = Path(a.out)
    results, lines = {}, []
    head = "| stage | seeds | pass@1 (strict: in tags) | pass@1 (lenient: last number) | format | length |"
    lines += [head, "|---|---|---|---|---|---|"]
    for label, prefix, stage in ROWS:
        for one in prefix.split(","):
            got = [stage_figures(out / f"{one}-s{s}" / stage / "eval") for s in a.seeds]
            got = [g for g in got if g]
            if got:
                break
        results[label] = got
        if not got:
            continue
        col = lambda k: spread([g[k] for g in got])
        length = statistics.mean(g["length"] for g in got)
        lines.append(
            f"| {label} | {len(got)} | {col('pass1')} | {col('pass1_lenient')} | {col('format')} "
            f"| {length:.0f} |"
        )
    curves = {}
    for prefix, stage in (
        ("zero", "01-rl"),
        ("zero-tag", "01-rl"),
        ("r1", "02-rl"),
        ("r1", "05-rl"),
    ):
        for s in a.seeds:
            m = out / f"{prefix}-s{s}" / stage / "run" / "metrics.jsonl"
            if m.is_file():
                steps = [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
                keys = ("step", "reward/mean", "len/mean", "time/step")
                curves[f"{prefix}-s{s}/{stage}"] = [{k: r.get(k) for k in keys} for r in steps]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"stages": results, "curves": curves}, indent=1))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["run", "table"])
    ap.add_argument("--model", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="runs/real-model")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=9, help="jobs at once")
    ap.add_argument("--task", choices=sorted(R1_RECIPE), default="arithmetic")
    ap.add_argument("--kinds", default="zero,zero-tag,r1", help="which jobs, a comma list")
    ap.add_argument("--gib", type=float, default=None, help="each RL stage's memory.max_memory_gib")
    ap.add_argument("--toy", action="store_true", help="a few-step smoke run (CPU)")
    ap.add_argument("--set", nargs="*", default=[], help="overrides for every pipeline, key=value")
    a = ap.parse_args()
    run(a) if a.what == "run" else table(a)


if __name__ == "__main__":
    main()
