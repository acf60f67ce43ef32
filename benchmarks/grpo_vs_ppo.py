"""GRPO vs PPO at the same budget on the model and task of `aha demo`: held-out pass@1, peak memory, step time.

The seed's claim (DeepSeekMath sec. 4.1, R1 sec. 2.2.1): GRPO matches PPO while dropping the value model, so it
needs less memory. Both algorithms run the recipe of `aha demo` (tiny-base, the chain task, the R1-Zero template,
accuracy + 0.5 format rewards, 16 prompts x 8 samples per step, 96 new tokens, lr 1e-4, 30 steps, no KL by
default) from configs/grpo.yaml and configs/ppo.yaml: the same prompts (same seed), samples, steps and learning
rate. What differs is the algorithm: GRPO's group-mean baseline and per-sequence token mean, against PPO's critic
(a second copy of the decoder with a scalar head, its own AdamW state, lr = the policy's) with per-token GAE and
token-mean loss. --beta > 0 adds the same k3 KL to a reference model to both.

Arms: grpo, ppo (configs/ppo.yaml as is: GAE lambda 1) and ppo-lam095 (the same with classic RLHF's lambda 0.95).
Each (arm, seed) runs in its own process (--jobs of them at once), so peak memory is not shared:
    GPU: torch.cuda.max_memory_allocated over training (after the base evaluation).
    CPU: peak RSS of the process (ru_maxrss) and its growth over the RSS after imports.
    Both: "state MB", the exact bytes of parameters + AdamW state of every model the algorithm holds (policy,
    reference, critic) -- on a tiny model this, not the peak (dominated by the runtime), shows the difference.
Step time: the median of time/step over the steps after the first (the first warms the engine up); processes
running at once share the GPU/CPU, so compare rows of one invocation. pass@1: the mean over --eval-k samples per
held-out problem (temperature 0.6, top-p 0.95) after the last step; "base" is the same evaluation before training.
Results: OUT/<algo>-s<seed>.json (a finished one is not rerun), OUT/results.json, and the printed table.

    python benchmarks/grpo_vs_ppo.py --out runs/grpo-vs-ppo --seeds 0 1 2 --jobs 2 --device cuda   # 9 runs, ~200 s
    python benchmarks/grpo_vs_ppo.py --out /tmp/gvp --model tiny-random --task arithmetic --steps 3 --device cpu
The 23M GPU variant (pretrain it first: aha pretrain configs/pretrain_gpu.yaml; 9 runs ~160 s on an H200; --jobs 9
ran out of memory on one 140 GB GPU):
    python benchmarks/grpo_vs_ppo.py --model runs/pretrain/tiny-base-gpu --max-new-tokens 256 --prompts 32 \
        --micro-batch 128 --set "task.options={min_terms: 6, max_terms: 10}" --seeds 0 1 2 --jobs 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import require_cuda, spread

ROOT = Path(__file__).resolve().parents[1]
# arm -> (configs/<name>.yaml and trainer, extra overrides). configs/ppo.yaml uses GAE lambda = 1 (Monte Carlo
# return minus V): the reward sits on the last token, and with lambda = 0.95 an early token (where the model
# chooses to write its steps or not) gets 0.95^60 ~ 5% of it directly, the rest through a critic that starts
# untrained (measured: 0.95 fell to held-out pass@1 0.15 from the base's 0.45; lambda 1 reached 0.91).
ARMS = {"grpo": ("grpo", []), "ppo": ("ppo", []), "ppo-lam095": ("ppo", ["algorithm.lam=0.95"])}
LABELS = {
    "grpo": "GRPO",
    "ppo": "PPO (configs/ppo.yaml: GAE lambda 1)",
    "ppo-lam095": "PPO, GAE lambda 0.95",
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", type=Path, default=Path("runs/grpo-vs-ppo"), help="results directory (resumable)"
    )
    p.add_argument("--model", default="tiny-base")
    p.add_argument("--task", default="chain")
    p.add_argument("--template", default="r1-zero")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--samples", type=int, default=8, help="samples per prompt (GRPO's group size)")
    p.add_argument("--micro-batch", type=int, default=64, help="sequences per forward/backward")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-4, help="policy (and critic) learning rate")
    p.add_argument(
        "--beta",
        type=float,
        default=0.0,
        help="k3 KL-to-reference weight in the loss, both algorithms",
    )
    p.add_argument(
        "--eval-size", type=int, default=500, help="held-out problems (0 = no evaluation)"
    )
    p.add_argument("--eval-k", type=int, default=4)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--jobs", type=int, default=2, help="processes at once")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides, both runs"
    )
    p.add_argument("--worker", choices=list(ARMS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def overrides(args, out: Path) -> list[str]:
    return [
        f"model.path={args.model}",
        f"model.device={args.device}",
        f"task.name={args.task}",
        f"task.template={args.template}",
        f"steps={args.steps}",
        f"batch.prompts_per_step={args.prompts}",
        f"sampling.group_size={args.samples}",
        f"batch.micro_batch_size={args.micro_batch}",
        f"sampling.max_new_tokens={args.max_new_tokens}",
        "sampling.temperature=1.0",
        f"optim.lr={args.lr}",
        "optim.warmup_steps=5",
        "optim.max_grad_norm=1.0",
        f"algorithm.beta={args.beta}",
        "rewards.funcs=[{name: accuracy, weight: 1.0}, {name: format, weight: 0.5}]",
        f"eval.limit={args.eval_size}",
        f"eval.k={args.eval_k}",
        "logging.eval_every=0",
        "logging.progress=false",
        "logging.samples_every=0",
        "logging.log_every=1",
        "checkpoint.save_every=0",
        "rewards.num_workers=1",
        f"seed={args.seed}",
        f"out={out}",
        *args.set,
        *ARMS[args.worker][1],
    ]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def state_mb(*modules_and_optimizers) -> float:
    """Bytes of parameters (each tensor once) and optimizer state tensors."""
    import torch

    seen, total = set(), 0
    for obj in modules_and_optimizers:
        if obj is None:
            continue
        tensors = (
            list(obj.parameters())
            if isinstance(obj, torch.nn.Module)
            else [t for st in obj.state.values() for t in st.values() if torch.is_tensor(t)]
        )
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total / 2**20


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from aha.config import load_config
    from aha.train.config import TrainConfig

    out = args.out / f"{args.worker}-s{args.seed}"
    shutil.rmtree(
        out, ignore_errors=True
    )  # an unfinished earlier attempt: start over (runs are short)
    algo = ARMS[args.worker][0]
    cfg = load_config(TrainConfig, ROOT / "configs" / f"{algo}.yaml", overrides(args, out))
    if algo == "ppo":
        from aha.train.ppo import PPOTrainer as Trainer
    else:
        from aha.train.grpo import GRPOTrainer as Trainer
    rss0 = rss_mb()
    trainer = Trainer(cfg)
    try:
        base = trainer.evaluate() if args.eval_size else {}
        cuda = trainer.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fit = trainer.fit()
        seconds = time.perf_counter() - t0
        ref = None
        if trainer.ref is not None:
            with trainer.ref() as ref_model:
                ref = (
                    ref_model if ref_model is not trainer.model else None
                )  # LoRA: the policy itself
        held = [
            trainer.model,
            trainer.optimizer,
            ref,
            getattr(getattr(trainer, "critic", None), "value", None),
            getattr(getattr(trainer, "critic", None), "optimizer", None),
        ]
        rows = [
            json.loads(line)
            for line in (out / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        steps = [r["time/step"] for r in rows[1:]] or [rows[0]["time/step"]]
        last = [r["reward/mean"] for r in rows[-5:] if r.get("reward/mean") is not None]
        result = {
            "algo": args.worker,
            "seed": args.seed,
            "steps": fit["steps"],
            "pass1": rows[-1].get("eval/pass1"),
            "format": rows[-1].get("eval/format"),
            "base_pass1": base.get("eval/pass1"),
            "base_format": base.get("eval/format"),
            "reward_last5": statistics.mean(last) if last else None,
            "step_s": statistics.median(steps),
            "run_s": seconds,
            "generate_s": statistics.median(r.get("time/generate", 0.0) for r in rows[1:] or rows),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss0_mb": rss0,
            "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "state_mb": state_mb(*held),
            "device": str(trainer.device),
        }
    finally:
        trainer.close()
    for ck in out.glob("checkpoints"):  # keep metrics.jsonl and config, not the weights
        shutil.rmtree(ck, ignore_errors=True)
    Path(args.result).write_text(json.dumps(result))


def run_all(args) -> list[dict]:
    """One process per (algorithm, seed), up to args.jobs at once; finished ones (their JSON exists) are kept."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    todo = [(a, s) for s in args.seeds for a in args.arms]
    pending = [(a, s) for a, s in todo if not (args.out / f"{a}-s{s}.json").is_file()]
    running, failed, t0 = [], [], time.time()
    passthrough = sys.argv[1:]
    while pending or running:
        while pending and len(running) < args.jobs:
            a, s = pending.pop(0)
            log = open(args.out / f"{a}-s{s}.log", "w")
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                *passthrough,
                "--out",
                str(args.out),
                "--worker",
                a,
                "--seed",
                str(s),
                "--result",
                str(args.out / f"{a}-s{s}.json"),
            ]
            running.append(
                (
                    a,
                    s,
                    subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                )
            )
            print(f"[{time.time() - t0:5.0f}s] {a} seed {s}: started", flush=True)
        for item in list(running):
            a, s, proc = item
            if proc.poll() is not None:
                running.remove(item)
                ok = proc.returncode == 0
                print(
                    f"[{time.time() - t0:5.0f}s] {a} seed {s}: {'done' if ok else 'FAILED'}"
                    + ("" if ok else f" (see {args.out}/{a}-s{s}.log)"),
                    flush=True,
                )
                if not ok:
                    failed.append((a, s))
        time.sleep(0.5)
    return [
        json.loads((args.out / f"{a}-s{s}.json").read_text())
        for a, s in todo
        if (args.out / f"{a}-s{s}.json").is_file()
    ]


def show(args, results: list[dict]) -> None:
    print(
        f"\nGRPO vs PPO: model {args.model}, task {args.task}, {args.steps} steps x {args.prompts} prompts x "
        f"{args.samples} samples, max {args.max_new_tokens} new tokens, lr {args.lr}, beta {args.beta}; held-out "
        f"pass@1 over {args.eval_size} problems x {args.eval_k} samples (T=0.6); seeds {args.seeds}; "
        f"mean ± std (min..max)\n"
    )
    gpu = any(r["gpu_peak_mb"] is not None for r in results)
    mem = "GPU peak MB" if gpu else "peak RSS MB (growth)"
    print(
        f"| algorithm | seeds | held-out pass@1 | format | train reward (last 5) | step s (median) | {mem} | state MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = [r for r in results if r["algo"] == args.arms[0] and r["base_pass1"] is not None]
    if base:
        print(
            f"| base (no training) | {len(base)} | {spread(r['base_pass1'] for r in base)} | "
            f"{spread(r['base_format'] for r in base)} | | | | |"
        )
    summary = {}
    for algo in args.arms:
        rs = [r for r in results if r["algo"] == algo]
        if not rs:
            continue
        m = (
            f"{statistics.mean(r['gpu_peak_mb'] for r in rs):.0f}"
            if gpu
            else f"{statistics.mean(r['peak_rss_mb'] for r in rs):.0f} "
            f"(+{statistics.mean(r['peak_rss_mb'] - r['rss0_mb'] for r in rs):.0f})"
        )
        print(
            f"| {LABELS[algo]} | {len(rs)} | {spread(r['pass1'] for r in rs)} | {spread(r['format'] for r in rs)} | "
            f"{spread(r['reward_last5'] for r in rs)} | {statistics.mean(r['step_s'] for r in rs):.2f} | {m} | "
            f"{statistics.mean(r['state_mb'] for r in rs):.1f} |"
        )
        summary[algo] = {
            k: statistics.mean(r[k] for r in rs) for k in ("step_s", "state_mb", "peak_rss_mb")
        }
        summary[algo]["gpu_peak_mb"] = (
            statistics.mean(r["gpu_peak_mb"] for r in rs) if gpu else None
        )
        for k in ("pass1", "format"):
            xs = [r[k] for r in rs if r[k] is not None]
            summary[algo][k] = statistics.mean(xs) if xs else None
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "runs": results,
                "mean": summary,
            },
            indent=1,
        )
    )
    print(f"\nwrote {args.out / 'results.json'}")


def main(argv=None) -> int:
    args = parse(argv)
    args.out = args.out.resolve()
    if args.worker:
        worker(args)
        return 0
    require_cuda(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_all(args)
    show(args, results)
    return 0 if len(results) == len(args.seeds) * len(args.arms) else 1


if __name__ == "__main__":
    sys.exit(main())
