"""The scale table of issue 15: aha's GRPO step on Qwen2.5 architectures (0.5B-7B) x 512-16,384 new tokens on one
GPU, and the same case through TRL's GRPOTrainer (HF generate) when `trl` is installed, ratios from the same run.

Random weights (benchmarks/_qwen.py, no download) and forced lengths: the engine is called without stop ids
(TRL: generation_kwargs min_new_tokens), so every sequence has exactly the new tokens asked for on both sides.
Columns: step, generate and update seconds (median of steps 2..N, or step 1 when N = 1); update MFU =
6 x params x tokens / update seconds / 800 TFLOP/s (the H200's measured dense bf16 rate; tokens = prompt +
completion tokens of the step); peak GiB (torch's max allocated, over all steps); est GiB (the memory plan's
estimate for the chosen layout, to check it against the peak); the plan's choice (c = checkpointing on,
r = KV cache released for the update, and the micro-batch token budget). Under the table, each case's time split
(every time/* metric; "other" = the step less generate, reward, logprobs and update) and, on a GPU, the peak
torch's caching allocator reserved (what the device had to hold for the run's tensors, fragmentation included).

    python benchmarks/scale.py --models 0.5b --new 512 --trl --max-memory-gib 16 --steps 4 --set model.compile=true
    python benchmarks/scale.py --models 1.5b --new 4096 --max-memory-gib 40 --set model.compile=true
    python benchmarks/scale.py --models 1.5b --new 16384 --steps 1
    python benchmarks/scale.py --models 7b --new 2048 --prompts 4 --optim adamw_8bit --beta 0.04 --steps 2
    python benchmarks/scale.py --models 7b --new 4096 --lora 64 --steps 2 --work /tmp/aha-scale
    python benchmarks/scale.py --models 1.5b --new 4096 --profile 40   # the last step under cProfile (host side)
    python benchmarks/scale.py --tiny          # CPU smoke test (tests/test_scale_bench.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from _qwen import (
    ARCHS,
    build,
    n_params,
)  # a sibling module: the scripts run as python benchmarks/X.py

PEAK_FLOPS = 800e12


def overrides(model_dir: Path, new: int, args, out: Path) -> list[str]:
    o = [
        f"model.path={model_dir}",
        "task.name=arithmetic",
        f"sampling.group_size={args.group}",
        f"batch.prompts_per_step={args.prompts}",
        f"batch.micro_batch_size={args.micro}",
        f"sampling.max_new_tokens={new}",
        "optim.lr=1e-6",
        f"optim.name={args.optim}",
        f"model.lora.r={args.lora}",
        f"algorithm.beta={args.beta}",
        "rewards.funcs=[{name: accuracy}]",
        "logging.progress=false",
        "logging.samples_every=0",
        "checkpoint.save_every=0",
        f"memory.prompt_tokens={args.prompt_tokens}",
        f"out={out}",
    ]
    if args.max_memory_gib:
        o.append(f"memory.max_memory_gib={args.max_memory_gib}")
    if not torch.cuda.is_available():
        o += ["model.device=cpu", "engine=hf"]
    return o + list(args.set)


def force_lengths(engine) -> None:
    """No stop ids: every completion has max_new_tokens tokens, so both sides of a comparison do the same work."""
    generate = engine.generate
    engine.generate = lambda ids, p, **kw: generate(
        ids, dataclasses.replace(p, stop_token_ids=()), **kw
    )


def aha_case(model_dir: Path, arch: str, new: int, args, out: Path) -> dict:
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.grpo import GRPOTrainer

    cfg = load_config(TrainConfig, None, overrides(model_dir, new, args, out))
    tr = GRPOTrainer(cfg)
    update, tokens = tr.update, []
    force_lengths(tr.engine)
    tr.update = lambda batch: tokens.append(int(batch.attention_mask.sum())) or update(batch)
    try:
        rows = [tr.train_step(step) for step in range(1, args.steps + (0 if args.profile else 1))]
        if (
            args.profile
        ):  # the last step under cProfile: where the host spends it (GPU waits included)
            import cProfile
            import pstats

            prof = cProfile.Profile()
            rows.append(prof.runcall(tr.train_step, args.steps))
            print(
                f"\n{arch} x {new}: step {args.steps} under cProfile: aha's functions by cumulative time"
            )
            pstats.Stats(prof).sort_stats("cumulative").print_stats("aha/", args.profile)
            print("all functions by own time")
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    finally:
        tr.close()
    plan = tr.memory
    del tr
    gc.collect()
    timed = rows[1:] or rows  # step 1 = warm-up (CUDA graphs, allocator)
    med = lambda k: statistics.median(r[k] for r in timed)
    update_s = med("time/update")
    flops = 6 * n_params(arch) * statistics.median(tokens[len(rows) - len(timed) :])
    return {
        "step_s": med("time/step"),
        "generate_s": med("time/generate"),
        "update_s": update_s,
        "mfu": flops / update_s / PEAK_FLOPS,
        "len": med("len/mean"),
        "peak_gib": max(
            (r.get("memory/peak_gib", float("nan")) for r in rows), default=float("nan")
        ),
        "reserved_gib": max(
            (r.get("memory/reserved_peak_gib", float("nan")) for r in rows), default=float("nan")
        ),
        "est_gib": plan.breakdown.total / 2**30 if plan is not None else float("nan"),
        # where a step's time goes: every time/* metric (median s), the rest of the step as "other"
        "split": {
            k[5:]: med(k) for k in sorted(timed[0]) if k.startswith("time/") and k != "time/step"
        },
        "plan": "-"
        if plan is None
        else f"{'c' if plan.checkpointing else ''}{'r' if plan.engine_release else ''}"
        f"{plan.micro_batch_tokens}",
    }


class _Timer:
    """A transformers TrainerCallback that records each optimizer step's wall time."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, *a, **k):
                timer.t0 = time.perf_counter()

            def on_step_end(self, *a, **k):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.steps.append(time.perf_counter() - timer.t0)

        self.steps, self.t0, self.callback = [], 0.0, CB()


def trl_case(model_dir: Path, new: int, args, prompts: list[str], out: Path) -> dict:
    """The same case through TRL's GRPOTrainer: its defaults (activation checkpointing, HF generate), one
    generation batch of prompts x group completions per optimizer step, a reward of 0 (as aha's on random text)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from aha.models.load import load_tokenizer

    n, micro = args.prompts * args.group, min(args.micro, args.prompts * args.group)
    cuda = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=n // micro,
        num_generations=args.group,
        max_completion_length=new,
        generation_kwargs={"min_new_tokens": new},  # forced lengths
        max_steps=args.trl_steps,
        learning_rate=1e-6,
        beta=args.beta,
        bf16=cuda,
        use_cpu=not cuda,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
    )
    peft = None
    if args.lora:
        from peft import LoraConfig

        peft = LoraConfig(r=args.lora, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    zero = lambda completions, **kw: [0.0] * len(completions)
    zero.__name__ = "zero"
    timer = _Timer()
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=zero,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts * (args.trl_steps + 1)}),
        processing_class=load_tokenizer(str(model_dir)),
        callbacks=[timer.callback],
        peft_config=peft,
    )
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del trainer
    gc.collect()
    timed = timer.steps[1:] or timer.steps
    return {"trl_step_s": statistics.median(timed), "trl_peak_gib": peak}


def prompt_texts(model_dir: Path, args) -> list[str]:
    """The first `prompts` prompts aha trains on (its task and template), as text for TRL."""
    from aha.config import load_config
    from aha.data import get_task, render_prompt
    from aha.models.load import load_tokenizer
    from aha.train.config import TrainConfig

    cfg = load_config(TrainConfig, None, overrides(model_dir, 8, args, Path("unused")))
    task, tok = get_task(cfg.task.name), load_tokenizer(str(model_dir))
    rows = [task.dataset("train")[i] for i in range(args.prompts)]
    return [render_prompt(r["question"], cfg.task.template, tokenizer=tok) for r in rows]


COLS = ["model", "new", "step_s", "generate_s", "update_s", "mfu", "peak_gib", "est_gib", "plan"]
TRL_COLS = ["trl_step_s", "trl_peak_gib", "step_x", "peak_x"]


def fmt(v) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.2f}"
    return str(v)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="0.5b,1.5b", help="comma list of " + ",".join(ARCHS))
    p.add_argument("--new", default="512,4096", help="new tokens per sequence, a comma list")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--micro", type=int, default=16, help="batch.micro_batch_size")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=512, help="memory.prompt_tokens")
    p.add_argument("--optim", default="adamw", help="adamw | adamw_8bit | adamw_cpu_offload")
    p.add_argument("--lora", type=int, default=0, help="LoRA rank (0 = full fine-tuning)")
    p.add_argument(
        "--beta", type=float, default=0.0, help="KL weight (> 0 loads a reference model)"
    )
    p.add_argument("--max-memory-gib", type=float, default=None, help="memory.max_memory_gib")
    p.add_argument("--set", nargs="*", default=[], help="more aha config overrides, key=value")
    p.add_argument("--trl", action="store_true", help="also run TRL's GRPOTrainer (needs trl)")
    p.add_argument("--trl-steps", type=int, default=2)
    p.add_argument("--trl-max-new", type=int, default=4096, help="TRL only for cases up to this")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny model, 8 new tokens")
    p.add_argument(
        "--profile", type=int, default=0, help="run the last step under cProfile; print N functions"
    )
    p.add_argument(
        "--work", default=None, help="keep the built models here (reused by later calls)"
    )
    args = p.parse_args(argv)
    if args.tiny:
        args.models, args.new, args.prompts, args.group, args.micro, args.steps = (
            "tiny",
            "8",
            2,
            2,
            4,
            2,
        )
        args.trl_steps = min(args.trl_steps, 2)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="aha-scale-"))
    results = []
    for arch in args.models.split(","):
        model_dir = build(arch, work / arch)
        for new in [int(x) for x in args.new.split(",")]:
            row = {"model": arch, "new": new}
            try:
                row.update(aha_case(model_dir, arch, new, args, work / f"aha-{arch}-{new}"))
            except Exception as e:  # report the failure in the table; the other cases still run
                print(f"aha {arch} x {new}: {type(e).__name__}: {e}", file=sys.stderr)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if args.trl and new <= args.trl_max_new:
                try:
                    out = work / f"trl-{arch}-{new}"
                    row.update(trl_case(model_dir, new, args, prompt_texts(model_dir, args), out))
                    if "step_s" in row:
                        row["step_x"] = row["trl_step_s"] / row["step_s"]
                        row["peak_x"] = row["trl_peak_gib"] / row["peak_gib"]
                except Exception as e:
                    print(f"trl {arch} x {new}: {type(e).__name__}: {e}", file=sys.stderr)
            results.append(row)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"\nGRPO step, Qwen2.5 architectures (random weights, forced lengths), {dev}, torch "
        f"{torch.__version__}; {args.prompts} prompts x {args.group} samples, optim {args.optim}, "
        f"LoRA r={args.lora}, beta={args.beta}; MFU at {PEAK_FLOPS / 1e12:.0f} TFLOP/s"
        + (f"; {' '.join(args.set)}" if args.set else "")
    )
    cols = COLS + (TRL_COLS if args.trl else [])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(fmt(r.get(c, float("nan"))) for c in cols) + " |")
    for r in results:
        if "split" in r:
            top = (
                "generate",
                "reward",
                "logprobs",
                "update",
            )  # the phases (optimizer is within update)
            other = r["step_s"] - sum(r["split"].get(k, 0.0) for k in top)
            parts = ", ".join(f"{k} {v:.3f}" for k, v in r["split"].items())
            print(f"  {r['model']} x {r['new']} time split (median s): {parts}; other {other:.3f}")
            if not math.isnan(r.get("reserved_gib", math.nan)):  # a GPU run
                print(
                    f"  {r['model']} x {r['new']} peak reserved by torch's allocator: {r['reserved_gib']:.2f} GiB"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
