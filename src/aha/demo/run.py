"""`aha demo`: the R1-Zero story on the tiny base model shipped with aha, on a laptop CPU in minutes.

    held-out eval (before) -> GRPO with accuracy + format rewards on the R1-Zero template -> held-out eval (after)

It prints progress per step, then pass@1 (mean over k samples per problem) and format compliance before vs
after, the response-length curve, how often completions re-check or revise an intermediate result, and a few
completions before and after; it writes summary.json, metrics.jsonl, eval_before/ and eval_after/ (per-sample
JSONL) and report/ (PNG plots of reward, accuracy and length, and an HTML page) under --out.

--gpu trains the 23M-parameter variant (configs/pretrain_gpu.yaml) on a GPU; --recheck trains tiny-recheck, whose
pretraining corpus slips unless a solution verifies its steps, so that RL has a reason to make it re-check.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

# The demo's recipe: every value here is an ordinary TrainConfig override, so `aha demo key=value` changes it.
DEMO = [
    "model.path=tiny-base",
    "model.device=cpu",
    "task.name=chain",
    "task.template=r1-zero",
    "rewards.funcs=[{name: accuracy, weight: 1.0}, {name: format, weight: 0.5}]",
    "rewards.num_workers=1",
    "sampling.group_size=8",
    "sampling.temperature=1.0",
    "sampling.max_new_tokens=96",
    "algorithm.advantage=grpo",
    "algorithm.agg=seq-mean-token-mean",
    "algorithm.beta=0.0",
    "optim.lr=1e-4",
    "optim.warmup_steps=5",
    "optim.max_grad_norm=1.0",
    "batch.prompts_per_step=16",
    "batch.micro_batch_size=64",
    "steps=30",
    "checkpoint.save_every=0",
    "logging.samples_every=20",
    "eval.limit=64",
    "logging.eval_every=10",
    "eval.k=2",
]
QUICK = ["steps=15", "logging.eval_every=5", "eval.limit=32"]
# The GPU variant: the 23M-parameter base of configs/pretrain_gpu.yaml (pretrain it first) on chains of 6..10
# numbers, 32 prompts per step.
GPU_BASE = "runs/pretrain/tiny-base-gpu"
GPU = [
    f"model.path={GPU_BASE}",
    "model.device=cuda",
    "task.options={min_terms: 6, max_terms: 10}",
    "sampling.max_new_tokens=256",
    "batch.prompts_per_step=32",
    "batch.micro_batch_size=128",
    "eval.limit=128",
]
# The re-checking variant: the base model of configs/pretrain_recheck.yaml (shipped as tiny-recheck), whose corpus
# writers slip unless they verify each step; verified solutions are ~2x longer, hence 192 new tokens.
RECHECK = ["model.path=tiny-recheck", "sampling.max_new_tokens=192"]
EVAL = {"size": 200, "k": 4}
QUICK_EVAL = {"size": 100, "k": 2}


def demo_config(
    quick: bool, out: str, overrides: list[str], gpu: bool = False, recheck: bool = False
):
    from ..config import ConfigError, load_config
    from ..train.config import TrainConfig

    if gpu and recheck:
        raise ConfigError("demo", "--gpu and --recheck are two different base models; choose one")
    preset = DEMO + (QUICK if quick else []) + (GPU if gpu else []) + (RECHECK if recheck else [])
    return load_config(TrainConfig, None, preset + [f"out={out}"] + list(overrides))


def held_out(trainer, size: int, k: int, out_dir: Path):
    """The demo's before/after evaluation: the training's held-out evaluation (cfg.eval: its sampling and
    batch) on `size` problems x `k` samples, with bootstrap intervals and its own seed."""
    from ..eval import evaluate_task

    cfg = trainer.cfg
    sampling = dataclasses.replace(cfg.eval.sampling, seed=cfg.seed + 7)
    ev = dataclasses.replace(cfg.eval, limit=size, k=k, n_boot=200, sampling=sampling)
    return evaluate_task(
        trainer.engine,
        trainer.tok,
        cfg.task,
        ev,
        seed=cfg.seed,
        built=trainer.task,
        out_dir=out_dir,
    )


def run_demo(
    quick: bool = False,
    out: str | None = None,
    overrides: tuple[str, ...] = (),
    log=print,
    gpu: bool = False,
    eval_size: int | None = None,
    eval_k: int | None = None,
    recheck: bool = False,
) -> dict:
    from ..eval import make_report
    from ..train.grpo import GRPOTrainer

    out = out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = demo_config(quick, out, list(overrides), gpu, recheck)
    if gpu:
        check_gpu(cfg.model.path)
    ev = dict(QUICK_EVAL if quick else EVAL)
    ev.update({k: v for k, v in (("size", eval_size), ("k", eval_k)) if v is not None})
    t0 = time.perf_counter()
    trainer = GRPOTrainer(cfg)
    try:
        log(
            f"aha demo: R1-Zero GRPO on {cfg.model.path} ({sum(p.numel() for p in trainer.model.parameters()) / 1e6:.1f}M "
            f"params), task '{cfg.task.name}', {cfg.steps} steps of {cfg.batch.prompts_per_step} prompts x "
            f"{cfg.sampling.group_size} samples; held-out eval: {ev['size']} problems x {ev['k']} samples"
        )
        before = held_out(trainer, ev["size"], ev["k"], Path(out) / "eval_before")
        log(
            f"before: pass@1 {before.metrics['pass1']:.3f}  format {before.metrics['format']:.3f}  "
            f"length {before.metrics['len_mean']:.0f}"
        )
        fit = trainer.fit()
        if fit["stopped_early"]:
            log(
                f"stopped at step {fit['steps']}; the checkpoint is in {out}/checkpoints "
                f"(`aha train {out}/config.yaml resume=true` continues the training)"
            )
            return {"steps": fit["steps"], "stopped_early": True}
        after = held_out(trainer, ev["size"], ev["k"], Path(out) / "eval_after")
    finally:
        trainer.close()
    summary = summarize(before, after, fit, time.perf_counter() - t0, Path(out))
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1))
    report = make_report(out)
    show(summary, before, after, report, log)
    return summary


def check_gpu(path: str) -> None:
    import torch

    from ..config import ConfigError

    if not torch.cuda.is_available():
        raise ConfigError(
            "model.device",
            "--gpu needs a CUDA GPU and none is visible; run `aha demo` (CPU) instead",
        )
    if path == GPU_BASE and not (Path(path) / "config.json").is_file():
        raise ConfigError(
            "model.path",
            f"--gpu trains the base model in {GPU_BASE}, which does not exist; "
            "run `aha pretrain configs/pretrain_gpu.yaml` first (a few minutes on one GPU)",
        )


def summarize(before, after, fit: dict, seconds: float, out: Path) -> dict:
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    b, a = before.metrics, after.metrics
    return {
        "pass1_before": b["pass1"],
        "pass1_after": a["pass1"],
        "pass1_before_ci": before.ci.get("pass1"),
        "pass1_after_ci": after.ci.get("pass1"),
        "format_before": b["format"],
        "format_after": a["format"],
        "len_before": b["len_mean"],
        "len_after": a["len_mean"],
        "reflection_before": b.get("reflection_rate"),
        "reflection_after": a.get("reflection_rate"),
        "revision_before": b.get("revision_rate"),
        "revision_after": a.get("revision_rate"),
        "steps": fit["steps"],
        "seconds": round(seconds, 1),
        "length_curve": [[r["step"], r.get("len/mean")] for r in rows],
        "accuracy_curve": [[r["step"], r.get("reward/accuracy")] for r in rows],
        "held_out_curve": [[r["step"], r["eval/pass1"]] for r in rows if "eval/pass1" in r],
        "reflection_curve": [
            [r["step"], r["eval/reflection_rate"]] for r in rows if "eval/reflection_rate" in r
        ],
    }


def show(summary: dict, before, after, report: Path, log) -> None:
    s = summary
    log("\n            before   after")
    log(f"pass@1      {s['pass1_before']:6.3f}  {s['pass1_after']:6.3f}")
    log(f"format      {s['format_before']:6.3f}  {s['format_after']:6.3f}")
    log(f"length      {s['len_before']:6.1f}  {s['len_after']:6.1f}")
    log(
        f"re-checks   {s['reflection_before'] or 0:6.3f}  {s['reflection_after'] or 0:6.3f}   (completions with 'wait', 'check', ...)"
    )
    log(
        f"revisions   {s['revision_before'] or 0:6.3f}  {s['revision_after'] or 0:6.3f}   (completions that revise an intermediate result)"
    )
    curve = " ".join(
        f"{v:.0f}"
        for _, v in s["length_curve"][:: max(1, len(s["length_curve"]) // 12)]
        if v is not None
    )
    log(f"length by step: {curve}")
    for name, res in (("before", before), ("after", after)):
        log(f"\n--- {name}: sample completions ---")
        for smp in res.samples[:: max(1, len(res.samples) // 3)][:3]:
            text = smp["completion"].replace("\n", "\\n")
            text = (
                text if len(text) <= 240 else f"{text[:150]} ... {text[-85:]}"
            )  # keep the <answer>
            log(f"[{'correct' if smp.get('correct') else 'wrong  '}] {smp['question']}  ->  {text}")
    log(f"\n{s['steps']} steps, {s['seconds']:.0f} s; report: {report}")
