"""GRPO vs PPO at the same budget: held-out pass@1, peak memory and step time, printed as a table.

The seed's claim (DeepSeekMath sec. 4.1, R1 sec. 2.2.1): GRPO matches PPO while dropping the value model, so it
needs less memory. Both runs here share the model, task, rewards, sampling, steps, prompts per step, samples per
prompt, learning rate and KL treatment (configs/grpo.yaml and configs/ppo.yaml: k3 KL to the reference in the
loss); PPO adds the critic (a second copy of the decoder with a scalar head, its AdamW state) and per-token GAE.

Each algorithm runs in its own process, so peak memory is not shared between them:
    GPU: torch.cuda.max_memory_allocated over the run.
    CPU: peak RSS of the process (ru_maxrss) and its growth over the RSS after imports.
    Both: "state MB", the exact bytes of parameters + AdamW state of every model the algorithm holds (policy,
    reference, critic) -- on a tiny model this, not the peak RSS (dominated by the Python/torch runtime), shows
    the difference.
Step time is the median of time/step over the steps after the first (the first one starts the reward workers).
pass@1 is the mean over eval_k samples per held-out problem (temperature 0.6, top-p 0.95), at the last step;
"base" is the same evaluation before any training.

    python benchmarks/grpo_vs_ppo.py                     # the demo model (tiny-base) if installed, else tiny-random
    python benchmarks/grpo_vs_ppo.py --steps 60 --device cuda --model Qwen/Qwen2.5-0.5B --task countdown
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse(argv=None):
    from aha.models.load import BUILTIN

    demo = BUILTIN["tiny-base"].is_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny-base" if demo else "tiny-random")
    p.add_argument("--task", default="chain" if demo else "arithmetic")
    p.add_argument("--template", default=None, help="prompt template (default: the preset's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--samples", type=int, default=8, help="samples per prompt (GRPO's group size)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--lr", type=float, default=None, help="policy (and critic) learning rate (default: the preset's)")
    p.add_argument("--eval-size", type=int, default=64)
    p.add_argument("--eval-k", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides, both runs")
    p.add_argument("--worker", choices=["grpo", "ppo"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def overrides(args, out: str) -> list[str]:
    o = [f"model.path={args.model}", f"model.device={args.device}", f"task.name={args.task}", f"steps={args.steps}",
         f"batch.prompts_per_step={args.prompts}", f"sampling.group_size={args.samples}",
         f"batch.micro_batch_size={args.samples}", f"sampling.max_new_tokens={args.max_new_tokens}",
         f"logging.eval_size={args.eval_size}", f"logging.eval_k={args.eval_k}", "logging.eval_every=0",
         "logging.progress=false", "logging.samples_every=0", "logging.log_every=0", "checkpoint.save_every=0",
         "rewards.num_workers=1", f"seed={args.seed}", f"out={out}"]
    if args.template:
        o.append(f"task.template={args.template}")
    if args.lr:
        o.append(f"optim.lr={args.lr}")
    return o + list(args.set)


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
        tensors = (list(obj.parameters()) if isinstance(obj, torch.nn.Module) else
                   [t for st in obj.state.values() for t in st.values() if torch.is_tensor(t)])
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total / 2**20


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.task == "chain":
        import aha.demo.task  # noqa: F401  (registers the demo's task)
    from aha.config import load_config
    from aha.train.config import TrainConfig

    out = tempfile.mkdtemp(prefix=f"aha-{args.worker}-")
    cfg = load_config(TrainConfig, ROOT / "configs" / f"{args.worker}.yaml", overrides(args, out))
    if args.worker == "ppo":
        from aha.train.ppo import PPOTrainer as Trainer
    else:
        from aha.train.grpo import GRPOTrainer as Trainer
    rss0 = rss_mb()
    trainer = Trainer(cfg)
    try:
        base = trainer.evaluate() if args.worker == "grpo" and args.eval_size else {}
        cuda = torch.cuda.is_available() and trainer.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - t0
        ref = None
        if trainer.ref is not None:
            with trainer.ref() as ref_model:
                ref = ref_model if ref_model is not trainer.model else None   # LoRA: the policy itself
        held = [trainer.model, trainer.optimizer, ref, getattr(trainer, "value", None),
                getattr(trainer, "value_optimizer", None)]
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        steps = [r["time/step"] for r in rows[1:]] or [rows[0]["time/step"]]
        result = {
            "algo": args.worker, "pass1": rows[-1].get("eval/pass1"), "base_pass1": base.get("eval/pass1"),
            "reward_last5": statistics.mean(r["reward/mean"] for r in rows[-5:] if r["reward/mean"] is not None),
            "step_s": statistics.median(steps), "run_s": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss0_mb": rss0,
            "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "state_mb": state_mb(*held),
        }
    finally:
        trainer.close()
        shutil.rmtree(out, ignore_errors=True)
    Path(args.result).write_text(json.dumps(result))


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    results = []
    for algo in ("grpo", "ppo"):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, __file__, "--worker", algo, "--result", f.name, *sys.argv[1:]]
            subprocess.run(cmd, check=True, cwd=ROOT)
            results.append(json.loads(Path(f.name).read_text()))
    print(f"\nGRPO vs PPO: model {args.model}, task {args.task}, {args.steps} steps x {args.prompts} prompts x "
          f"{args.samples} samples, max {args.max_new_tokens} new tokens, held-out pass@1 over {args.eval_size} "
          f"problems x {args.eval_k} samples\n")
    gpu = results[0]["gpu_peak_mb"] is not None
    mem = "GPU peak MB" if gpu else "peak RSS MB (growth)"
    print(f"| algorithm | pass@1 | train reward (last 5) | step s (median) | {mem} | state MB |")
    print("|---|---|---|---|---|---|")
    fmt = lambda x, f="{:.3f}": "n/a" if x is None else f.format(x)
    if results[0]["base_pass1"] is not None:
        print(f"| base (no training) | {fmt(results[0]['base_pass1'])} | | | | |")
    for r in results:
        m = (f"{r['gpu_peak_mb']:.0f}" if gpu else f"{r['peak_rss_mb']:.0f} (+{r['peak_rss_mb'] - r['rss0_mb']:.0f})")
        print(f"| {r['algo'].upper()} | {fmt(r['pass1'])} | {fmt(r['reward_last5'])} | {r['step_s']:.2f} | {m} | "
              f"{r['state_mb']:.1f} |")


if __name__ == "__main__":
    main()
