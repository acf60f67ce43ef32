"""GRPO step time on one GPU, bf16: the same config with the HF-generate engine and the fast engine.

Random weights of a real architecture (Qwen2.5-0.5B by default) and a filler tokenizer: no downloads; the
rewards are all 0 (random text), which does not change the cost of a step (the update still runs forward and
backward over every token). Prints median step time and its split per engine.

    python benchmarks/grpo_step.py [--arch 0.5b] [--steps 4] [--prompts 32] [--group 8] [--new 256]
    python benchmarks/grpo_step.py --engines fast,fast/noshare     # the shared-prefix forward on vs off
    python benchmarks/grpo_step.py --engines fast,fast/release     # engine_release: KV cache freed per update
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from _qwen import ARCHS, build  # a sibling module: the scripts run as python benchmarks/X.py


def run(model_dir: Path, spec: str, args, out: Path) -> dict:
    """spec: an engine name, with "/noshare" for the plain training forward (batch.share_prefix=false) or
    "/release" to free the engine's KV cache before each update (engine_release=true)."""
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.grpo import train

    engine, _, flag = spec.partition("/")
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"batch.share_prefix={flag != 'noshare'}",
            f"engine_release={flag == 'release'}",
            f"model.path={model_dir}",
            "task.name=arithmetic",
            f"engine={engine}",
            f"steps={args.steps}",
            f"sampling.group_size={args.group}",
            f"batch.prompts_per_step={args.prompts}",
            f"batch.micro_batch_size={args.micro}",
            f"sampling.max_new_tokens={args.new}",
            "optim.lr=1e-6",
            "rewards.funcs=[{name: accuracy}, {name: format, weight: 0.5}]",
            "logging.progress=false",
            "logging.samples_every=0",
            "checkpoint.save_every=0",
            f"out={out}",
        ],
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(cfg)
    every = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    rows = every[1:]  # step 1 = warm-up
    med = lambda k: statistics.median(r[k] for r in rows)
    # the trainer logs each step's peak (memory/peak_gib, reset per step): the run's peak is their max
    peak = max((r.get("memory/peak_gib", float("nan")) for r in every), default=float("nan"))
    return {
        "engine": spec,
        "step_s": med("time/step"),
        "generate_s": med("time/generate"),
        "reward_s": med("time/reward"),
        "logprobs_s": med("time/logprobs"),
        "update_s": med("time/update"),
        "optim_s": med("time/optimizer"),
        "gen_tok_s": med("tokens_per_s"),
        "len": med("len/mean"),
        "peak_gib": peak,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="0.5b", choices=list(ARCHS))
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--micro", type=int, default=32)
    p.add_argument("--new", type=int, default=256)
    p.add_argument("--engines", default="hf,fast")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aha-bench-"))
    build(args.arch, work / "model")
    results = []
    for engine in args.engines.split(","):
        try:
            results.append(run(work / "model", engine, args, work / f"run-{engine}"))
        except (
            Exception
        ) as e:  # report a failing engine in the table rather than losing the other's row
            print(f"engine {engine} failed: {type(e).__name__}: {e}", file=sys.stderr)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"\nGRPO step, Qwen2 {args.arch} architecture (random weights), {dev}, torch {torch.__version__}; "
        f"{args.prompts} prompts x {args.group} samples, {args.new} max new tokens; median of steps 2..{args.steps}"
    )
    cols = [
        "engine",
        "step_s",
        "generate_s",
        "reward_s",
        "logprobs_s",
        "update_s",
        "optim_s",
        "gen_tok_s",
        "len",
        "peak_gib",
    ]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print(
            "| "
            + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
            + " |"
        )
    for r in results[1:]:
        print(
            f"step time {results[0]['engine']} / {r['engine']}: {results[0]['step_s'] / r['step_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
