"""The figures of issue 7 on the model and task of `aha demo`: R1 vs R1-Zero at equal RL steps, and distillation
vs RL alone on a smaller student, over several seeds, each arm an `aha pipeline` process run in parallel.

Per seed S (all read configs/pipeline_*.yaml; only out, seed and model paths are set here):
    r1-zero-sS     aha pipeline r1-zero configs/pipeline_r1_zero.yaml          base eval, 30 GRPO steps, eval
    r1-sS          aha pipeline r1 configs/pipeline_r1.yaml                     cold-start SFT -> 15 GRPO steps ->
                                                                                rejection sampling -> SFT -> 15 GRPO
    distill-sS     aha pipeline distill configs/pipeline_distill.yaml           teacher = the model of r1-zero-sS:
                   teacher=... student=... train_teacher=false rl_baseline=false  sample its verified traces, SFT the student
    student-rl-sS  aha pipeline r1-zero configs/pipeline_r1_zero.yaml model=STUDENT   the student with RL alone
and once: student (aha pretrain configs/pretrain_student.yaml, unless --student PATH) and the cold-start rows
(OUT/cold-start.jsonl: step-by-step solutions of *train*-split problems, see `cold_start`).

Every job is skipped when its output exists (a pipeline's summary.json, the student's recipe.json) and every
pipeline skips its finished stages, so re-running the command resumes. With --deadline the jobs still running
then get SIGTERM (trainers checkpoint on it) and the table shows what finished. Logs: OUT/logs/JOB.log.
Prints a markdown table (mean ± std and min..max over seeds) and writes OUT/results.json (see _r1_results.py).
Measured on one H200 with 8 CPU cores (taskset), 6 jobs at once, beside grpo_vs_ppo.py: all 13 jobs in 158 s
(student pretraining 108 s, r1-zero 41 s, r1 55 s, distill 50 s, student-rl 41 s per arm). On a CPU (--device cpu)
an RL step of this recipe takes ~10 s on one core: use --toy there, or expect hours.

    python benchmarks/r1_figures.py run --out runs/r1-figures --seeds 0 1 2 --jobs 6 --device cuda --deadline 540
    python benchmarks/r1_figures.py table --out runs/r1-figures          # the table again, from finished runs
    python benchmarks/r1_figures.py cold-start --out runs/cold-start/chain.jsonl   # pipeline_r1.yaml's rows
    python benchmarks/r1_figures.py run --out /tmp/r1f --toy --device cpu           # a few-step smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import require_cuda
from _r1_results import table

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs"
AHA = [sys.executable, "-m", "aha"]

# Few-step overrides per job for a smoke run (--toy): every stage runs, nothing is measured.
TOY_RL = [
    "steps=2",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=16",
    "logging.eval_every=1",
    "eval.limit=4",
    "logging.samples_every=0",
    "logging.progress=false",
]
TOY_SFT = ["steps=2", "logging.progress=false"]
TOY_SAMPLE = ["num_prompts=4", "k=2", "progress=false"]
TOY_EVAL = ["eval.limit=4", "eval.k=2"]
TOY = {
    "student": [
        "corpus.n_docs=2000",
        "optim.steps=20",
        "optim.batch_size=8",
        "optim.warmup_steps=2",
    ],
    "r1-zero": TOY_EVAL + [f"rl.{o}" for o in TOY_RL],
    "student-rl": TOY_EVAL + [f"rl.{o}" for o in TOY_RL],
    "r1": TOY_EVAL
    + [f"{s}.{o}" for s in ("rl", "rl2") for o in TOY_RL + ["steps=1"]]
    + [f"{s}.{o}" for s in ("cold_start", "sft") for o in TOY_SFT]
    + [f"sample.{o}" for o in TOY_SAMPLE],
    "distill": TOY_EVAL + [f"sft.{o}" for o in TOY_SFT] + [f"sample.{o}" for o in TOY_SAMPLE],
}


# ---- cold-start rows ---------------------------------------------------------------------------------------
def cold_start(
    path: Path, n: int = 256, start: int = 50_000, seed: int = 0, p_recheck: float = 0.3
) -> int:
    """Write n long chain-of-thought rows {question, answer, completion} from the chain task's *train* split
    (rows start..): the chain rewritten one operation at a time, as the pretraining corpus writes it, with a
    re-check ("wait, ...") in a fraction p_recheck, inside <think> </think> <answer> </answer>. A row is kept
    only when every chain in its text (the question and each rewritten step) is a train-split problem, so no
    held-out problem appears. Returns the number of rows."""
    from aha.data.chain import ChainTask, Problem, chains_in, split_of
    from aha.demo.corpus import step_text

    train = ChainTask().dataset("train")
    out, i = [], start
    while len(out) < n:
        row = train[i]
        expr = row["question"].split()[-1]
        numbers = tuple(int(x) for x in re.findall(r"\d+", expr))
        p = Problem(numbers, tuple(re.findall(r"[+-]", expr)))
        assert str(p.answer) == row["answer"], (row, p)
        steps = step_text(p, random.Random(f"cold-start:{seed}:{i}"), p_recheck)
        completion = f" <think> {steps} </think> <answer> {p.answer} </answer>"
        if all(split_of(c) == "train" for c in chains_in(completion)):
            out.append({**row, "completion": completion})
        i += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in out))
    tmp.replace(path)
    return len(out)


# ---- jobs ----------------------------------------------------------------------------------------------------
class Job:
    def __init__(self, name: str, deps: list[str], done: Path, argv):
        self.name, self.deps, self.done, self.argv = (
            name,
            deps,
            done,
            argv,
        )  # argv: () -> list[str], built late
        self.proc, self.t0, self.seconds, self.status = None, None, None, "waiting"


def rl_model(run: Path) -> str:
    """The trained model of a finished r1-zero pipeline (its 01-rl stage's output)."""
    return json.loads((run / "01-rl" / "manifest.json").read_text())["outputs"]["model"]


def make_jobs(a) -> list[Job]:
    out, toy = a.out, (TOY if a.toy else {})
    sets = {}
    for s in a.set:
        name, _, kv = s.partition(":")
        sets.setdefault(name, []).append(kv)
    extra = lambda name: toy.get(name, []) + sets.get(name, [])
    student = Path(a.student) if a.student else out / "student"
    jobs = []
    if not a.student:
        jobs.append(
            Job(
                "student",
                [],
                student / "recipe.json",
                lambda: [
                    *AHA,
                    "pretrain",
                    str(CFG / "pretrain_student.yaml"),
                    f"out_dir={student}",
                    *extra("student"),
                ],
            )
        )
    for s in a.seeds:
        pipe = lambda kind, cfg, run, *o, s=s: [
            *AHA,
            "pipeline",
            kind,
            str(CFG / cfg),
            f"seed={s}",
            f"out={run}",
            *o,
        ]
        z, r, d, srl = (out / f"{k}-s{s}" for k in ("r1-zero", "r1", "distill", "student-rl"))
        jobs += [
            Job(
                f"r1-zero-s{s}",
                [],
                z / "summary.json",
                lambda z=z, pipe=pipe: pipe(
                    "r1-zero", "pipeline_r1_zero.yaml", z, *extra("r1-zero")
                ),
            ),
            Job(
                f"r1-s{s}",
                [],
                r / "summary.json",
                lambda r=r, pipe=pipe: pipe(
                    "r1",
                    "pipeline_r1.yaml",
                    r,
                    f"cold_start.data.path=[{out / 'cold-start.jsonl'}]",
                    "eval.base=false",
                    *extra("r1"),
                ),
            ),
            Job(
                f"student-rl-s{s}",
                [] if a.student else ["student"],
                srl / "summary.json",
                lambda srl=srl, pipe=pipe: pipe(
                    "r1-zero",
                    "pipeline_r1_zero.yaml",
                    srl,
                    f"model={student}",
                    "eval.base=false",
                    *extra("student-rl"),
                ),
            ),
            Job(
                f"distill-s{s}",
                [f"r1-zero-s{s}"] + ([] if a.student else ["student"]),
                d / "summary.json",
                lambda d=d, z=z, pipe=pipe: pipe(
                    "distill",
                    "pipeline_distill.yaml",
                    d,
                    f"teacher={rl_model(z)}",
                    f"student={student}",
                    "train_teacher=false",
                    "rl_baseline=false",
                    *extra("distill"),
                ),
            ),
        ]
    keep = set(a.arms)
    return [j for j in jobs if j.name == "student" or j.name.rsplit("-s", 1)[0] in keep]


def child_env(device: str) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # every stage's device=auto then resolves to the CPU
    return env


def run_jobs(jobs: list[Job], a, log) -> None:
    """Start jobs whose dependencies are done, up to a.jobs at once; stop all at a.deadline (SIGTERM)."""
    t_start, by = time.time(), {j.name: j for j in jobs}
    (a.out / "logs").mkdir(parents=True, exist_ok=True)
    env = child_env(a.device)
    for j in jobs:
        if j.done.is_file():
            j.status = "done"
            log(f"  {j.name}: already done ({j.done})")
    while True:
        now = time.time() - t_start
        running = [j for j in jobs if j.status == "running"]
        for j in running:
            if j.proc.poll() is not None:
                j.seconds = time.time() - j.t0
                j.status = "done" if j.proc.returncode == 0 and j.done.is_file() else "failed"
                log(
                    f"[{now:5.0f}s] {j.name}: {j.status} in {j.seconds:.0f}s"
                    + (
                        ""
                        if j.status == "done"
                        else f" (exit {j.proc.returncode}; see {a.out}/logs/{j.name}.log)"
                    )
                )
        for j in jobs:  # a failed dependency fails its dependents
            if j.status == "waiting" and any(
                by[d].status in ("failed", "skipped") for d in j.deps if d in by
            ):
                j.status = "skipped"
                log(f"[{now:5.0f}s] {j.name}: skipped (a dependency failed)")
        if a.deadline and now > a.deadline:
            for j in jobs:
                if j.status == "running":
                    os.killpg(j.proc.pid, signal.SIGTERM)
                    try:
                        j.proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        os.killpg(j.proc.pid, signal.SIGKILL)
                    j.status = "stopped"
                    log(
                        f"[{now:5.0f}s] {j.name}: stopped at the deadline (rerun the command to resume)"
                    )
                elif j.status == "waiting":
                    j.status = "skipped"
            return
        ready = [
            j
            for j in jobs
            if j.status == "waiting" and all(by[d].status == "done" for d in j.deps if d in by)
        ]
        slots = a.jobs - sum(j.status == "running" for j in jobs)
        for j in ready[: max(0, slots)]:
            argv = j.argv()
            with open(a.out / "logs" / f"{j.name}.log", "a") as f:
                f.write(f"\n$ {' '.join(argv)}\n")
                f.flush()
                j.proc = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            j.t0, j.status = time.time(), "running"
            log(f"[{now:5.0f}s] {j.name}: started")
        if all(j.status not in ("waiting", "running") for j in jobs):
            return
        time.sleep(1.0)


def check_budget(a, log) -> dict:
    """The resolved configs of the arms; warns when R1's two RL stages do not add up to R1-Zero's steps."""
    from aha.config import load_config, to_dict
    from aha.pipelines import get_pipeline

    toy = TOY if a.toy else {}
    z = load_config(
        get_pipeline("r1-zero")[0], str(CFG / "pipeline_r1_zero.yaml"), toy.get("r1-zero", [])
    )
    r = load_config(get_pipeline("r1")[0], str(CFG / "pipeline_r1.yaml"), toy.get("r1", []))
    if r.rl.steps + r.rl2.steps != z.rl.steps:
        log(
            f"warning: R1's RL stages ({r.rl.steps} + {r.rl2.steps}) != R1-Zero's {z.rl.steps} steps"
        )
    return {
        "rl_steps": z.rl.steps,
        "r1_rl_steps": [r.rl.steps, r.rl2.steps],
        "eval": to_dict(z.eval),
        "rl": to_dict(z.rl),
        "toy": a.toy,
        "device": a.device,
        "sets": a.set,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["run", "table", "cold-start"])
    p.add_argument(
        "--out", type=Path, required=True, help="run directory (cold-start: the JSONL file)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=8, help="processes at once")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--arms", nargs="+", default=["r1-zero", "r1", "distill", "student-rl"])
    p.add_argument(
        "--student", help="a pretrained student model (default: pretrain OUT/student first)"
    )
    p.add_argument(
        "--deadline", type=float, default=0, help="seconds; then stop running jobs (resumable)"
    )
    p.add_argument("--toy", action="store_true", help="a few steps of everything (a smoke run)")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="JOB:KEY=VALUE",
        help="extra overrides of one job kind (r1-zero, r1, distill, student-rl, student)",
    )
    p.add_argument("--n", type=int, default=256, help="cold-start rows")
    a = p.parse_args(argv)
    if a.command == "cold-start":
        print(f"wrote {cold_start(a.out, a.n)} cold-start rows to {a.out}")
        return 0
    a.out = a.out.resolve()
    if a.command == "table":
        if not a.out.is_dir():
            raise SystemExit(
                f"{a.out}: no such results directory; pass the --out of an earlier `run`"
            )
        table(a)
        return 0
    require_cuda(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, flush=True)
    (a.out / "config.json").write_text(json.dumps(check_budget(a, log), indent=1, default=str))
    if "r1" in a.arms and not (a.out / "cold-start.jsonl").is_file():
        log(f"cold-start rows: {cold_start(a.out / 'cold-start.jsonl', 32 if a.toy else a.n)}")
    t0 = time.time()
    jobs = make_jobs(a)
    run_jobs(jobs, a, log)
    log(
        f"\nall jobs: {time.time() - t0:.0f}s; "
        + ", ".join(
            f"{j.name} {j.status}" + (f" {j.seconds:.0f}s" if j.seconds else "") for j in jobs
        )
    )
    table(a, log)
    return 0 if all(j.status == "done" for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
