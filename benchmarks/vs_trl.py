"""aha's GRPO against TRL's GRPOTrainer: the same model, prompts, rewards and hyperparameters, step time and
reward curve side by side over seeds, and held-out pass@1 of both final models by the same evaluation.

    python benchmarks/vs_trl.py --model DIR --task arithmetic --task-options '{ops: ["+"], digits: [1, 2]}' \\
        --template chat --system "..." --steps 20 --prompts 16 --group 8 --max-new-tokens 256 --lr 1e-5 \\
        --beta 0.04 --seeds 0 1 2 --device cuda --out runs/vs_trl
    python benchmarks/vs_trl.py --tiny --arms aha        # CPU smoke run: random tiny Llama, 2 steps

Both arms get the same prompt *text* (aha's task rows rendered by aha's template, in the order aha's trainer
draws them; TRL reads them unshuffled from a "prompt" column of raw text, tokenised by the same tokenizer) and
score completions with aha's reward functions (benchmarks/_trl_arm.AhaReward; checked equal on hand-written
completions before each TRL run). One optimizer step = P prompts x G completions, one update (mu = 1).

    aha (TrainConfig)                              TRL 1.16 (GRPOConfig)
    sampling.group_size = G                        num_generations = G
    batch.prompts_per_step = P                     per_device_train_batch_size = M,
    batch.micro_batch_size = M                     gradient_accumulation_steps = P*G/M (generation batch P*G)
    sampling.max_new_tokens, temperature, top_p=1  max_completion_length, temperature, top_p=1, top_k=0
    algorithm.advantage=grpo, std_scale=group      scale_rewards="group" (both: unbiased group std; eps 1e-6 vs 1e-4)
    algorithm.agg=seq-mean-token-mean              loss_type="grpo" (token mean per sequence, mean over sequences)
    algorithm.clip_low = clip_high = 0.2           epsilon = epsilon_high = 0.2
    algorithm.beta, kl_kind=k3                     beta, use_bias_correction_kl = false (plain k3, exp(ref-logp) -
                                                   (ref-logp) - 1; TRL's default multiplies it by the importance
                                                   ratio, which changes the KL gradient even on-policy)
    algorithm.mu = 1                               num_iterations = 1
    rewards.funcs [(name, weight)]                 reward_funcs + reward_weights, multi_objective_aggregation=sum_then_normalize
    optim.lr, betas (0.9, 0.99), eps 1e-8, wd 0    learning_rate, adam_beta1/2 = 0.9/0.99, adam_epsilon 1e-8, weight_decay 0
    optim.schedule=constant, warmup_steps W        lr_scheduler_type constant (W > 0: constant_with_warmup, whose first
                                                   step has lr 0 where aha's has lr/W)
    optim.max_grad_norm                            max_grad_norm
    model.gradient_checkpointing = false           gradient_checkpointing = false (TRL's default is true)
    seed                                           seed; shuffle_dataset = false (rows already in aha's order)
    engine auto: FastEngine on GPU, HF on CPU      use_vllm = false: HF generate
    GPU: bf16 weights + fp32 AdamW master copies   bf16 = true: fp32 weights + AdamW, bf16 autocast (TRL's default)
Sampling randomness differs (each arm's own generator), so the curves agree in distribution, not token for
token: compare them against the spread over seeds.

Writes into --out: summary.md (a table per arm, mean ± std over seeds, TRL/aha time ratios), results.json,
curves.csv (per-step reward, per-function rewards, length, times), reward_curves.png, each run's logs, and the
held-out evaluations (eval/<arm>-seed<S>/results.json + samples.jsonl; eval/base for the starting model).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch
import yaml

FULL = dict(
    steps=20, prompts=16, group=8, max_new_tokens=256, eval_size=200, eval_k=4, seeds=[0, 1, 2]
)
TINY = dict(steps=2, prompts=2, group=2, max_new_tokens=16, eval_size=4, eval_k=2, seeds=[0])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a Hugging Face model directory (not needed with --tiny)")
    p.add_argument("--tiny", action="store_true", help="random tiny Llama + char tokenizer, CPU")
    p.add_argument("--task", default="arithmetic")
    p.add_argument("--task-options", default="{}", help="YAML mapping, e.g. '{ops: [\"+\"]}'")
    p.add_argument(
        "--template", default="r1-zero", help="r1-zero | chat | plain | '...{prompt}...'"
    )
    p.add_argument("--system", default=None, help="system prompt (template chat)")
    p.add_argument("--prefill", default="")
    p.add_argument(
        "--rewards", nargs="+", default=["accuracy:1.0", "format:0.5"], help="name:weight"
    )
    for k in ("steps", "prompts", "group", "max_new_tokens", "eval_size", "eval_k"):
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None)
    p.add_argument("--micro", type=int, default=None, help="sequences per micro-batch (both arms)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--arms", nargs="+", default=["aha", "trl"], choices=["aha", "trl"])
    p.add_argument("--engine", default="auto", help="aha's rollout engine: auto | hf | fast")
    p.add_argument("--eval-engine", default="auto", help="engine for both arms' held-out eval")
    p.add_argument("--eval-temperature", type=float, default=0.6)
    p.add_argument("--eval-top-p", type=float, default=0.95)
    p.add_argument(
        "--keep-models", action="store_true", help="keep the trained models (deleted by default)"
    )
    p.add_argument("--out", default="runs/vs_trl")
    p.add_argument(
        "--merge", nargs="+", metavar="DIR", help="only report: combine earlier --out dirs"
    )
    a = p.parse_args(argv)
    if a.merge:
        return a
    for k, v in (TINY if a.tiny else FULL).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if not a.tiny and not a.model:
        p.error("--model DIR is required (or --tiny for the CPU smoke run)")
    if not a.tiny and not (Path(a.model) / "config.json").is_file():
        p.error(
            f"--model {a.model}: not a Hugging Face model directory (no config.json); both arms load it"
        )
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible; use --device cpu")
    n = a.prompts * a.group
    a.micro = a.micro or next(m for m in (64, 32, 16, 8, 4, 2, 1, n) if m <= n and n % m == 0)
    if n % a.micro:
        p.error(f"--micro {a.micro} must divide --prompts x --group = {n}")
    try:
        a.task_options = yaml.safe_load(a.task_options) or {}
        a.rewards = [
            (r.split(":")[0], float(r.split(":")[1]) if ":" in r else 1.0) for r in a.rewards
        ]
    except (yaml.YAMLError, ValueError) as e:
        p.error(f"--task-options must be a YAML mapping and --rewards name:weight ({e})")
    if not isinstance(a.task_options, dict):
        p.error("--task-options must be a YAML mapping, e.g. '{ops: [\"+\"], digits: [1, 2]}'")
    return a


def build_tiny(out: Path) -> Path:
    """A random 2-layer Llama with aha's character tokenizer, saved as a model directory both arms load."""
    from aha.models.tiny import char_tokenizer, tiny_model

    tok = char_tokenizer()
    tiny_model(len(tok), family="llama", hidden_size=32, seed=0).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def prompt_rows(a, task, tok, seed: int) -> tuple[list[str], list[dict]]:
    """The rows aha's trainer draws in `a.steps` steps for `seed` (its PromptStream), and their prompt text."""
    from aha.data.templates import render_prompt
    from aha.train.prompts import PromptStream

    rows = PromptStream(task.dataset("train"), seed).take(a.steps * a.prompts)
    kw = dict(tokenizer=tok, system=a.system, prefill=a.prefill)
    return [render_prompt(r["question"], a.template, **kw) for r in rows], rows


def aha_config(a, seed: int, out: Path) -> dict:
    """aha's TrainConfig for this comparison, as YAML data (the module docstring maps it to TRL's)."""
    return {
        "model": {"path": str(a.model), "device": a.device, "gradient_checkpointing": False},
        "task": {"name": a.task, "options": a.task_options, "template": a.template}
        | {"system": a.system, "prefill": a.prefill},
        "rewards": {"funcs": [{"name": n, "weight": w} for n, w in a.rewards]},
        "sampling": {"group_size": a.group, "temperature": a.temperature, "top_p": 1.0, "top_k": 0}
        | {"max_new_tokens": a.max_new_tokens},
        "algorithm": {"name": "grpo", "advantage": "grpo", "std_scale": "group", "mu": 1}
        | {
            "agg": "seq-mean-token-mean",
            "policy_loss": "ppo_clip",
            "clip_low": 0.2,
            "clip_high": 0.2,
        }
        | {"beta": a.beta, "kl_kind": "k3"},
        "optim": {"lr": a.lr, "weight_decay": 0.0, "betas": [0.9, 0.99], "eps": 1e-8}
        | {"schedule": "constant", "warmup_steps": a.warmup, "max_grad_norm": a.max_grad_norm},
        "batch": {"prompts_per_step": a.prompts, "micro_batch_size": a.micro},
        "logging": {"progress": False, "samples_every": 0},
        "eval": {"limit": 0},
        "checkpoint": {"save_every": 0, "keep_last": 1},
        "engine": a.engine,
        "steps": a.steps,
        "seed": seed,
        "out": str(out),
        "overwrite": True,  # a rerun of the comparison replaces the arm's earlier run
    }


def run_aha(a, seed: int, out: Path):
    """Train with aha's GRPO -> (per-step curve, info, model dir)."""
    from aha.config import load_config
    from aha.train.checkpoint import latest_checkpoint
    from aha.train.config import TrainConfig
    from aha.train.grpo import train

    out.mkdir(parents=True, exist_ok=True)
    (out / "vs_trl.yaml").write_text(yaml.safe_dump(aha_config(a, seed, out), sort_keys=False))
    cfg = load_config(TrainConfig, out / "vs_trl.yaml")
    t0 = time.perf_counter()
    train(cfg)
    info = {"wall_s": time.perf_counter() - t0}
    curve = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        curve.append(
            {
                "step": m["step"],
                "reward": m.get("reward/mean"),
                "len": m.get("len/mean"),
                **{f"reward/{n}": m.get(f"reward/{n}") for n, _ in a.rewards},
                "kl": m.get("kl"),
                "step_s": m["time/step"],
                "generate_s": m["time/generate"],
                "reward_s": m["time/reward"],
            }
        )
    return curve, info, latest_checkpoint(out)


def evaluate_model(a, path, rows: list[dict], task, seed: int, out: Path) -> dict:
    """Held-out pass@1 of the model at `path` by aha's evaluation: the same rows, engine and sampling for
    every arm and seed."""
    from aha.eval import evaluate
    from aha.models.load import load_model
    from aha.rollout.factory import make_engine

    model, tok = load_model(str(path), device=a.device, seed=seed)
    model.eval()
    res = evaluate(
        make_engine(a.eval_engine, model, tok),
        tok,
        rows,
        accuracy=task.accuracy_reward,
        k=a.eval_k,
        temperature=a.eval_temperature,
        top_p=a.eval_top_p,
        max_tokens=a.max_new_tokens,
        template=a.template,
        system=a.system,
        prefill=a.prefill,
        seed=seed,
        batch_size=64,
        out_dir=out,
    )
    del model
    free_memory()
    return {k: res.metrics[k] for k in ("pass1", "format", "len_mean")}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv=None) -> dict:
    import shutil

    from _trl_arm import run_trl
    from _vs_trl_report import write_report
    from aha.data import get_task
    from aha.models.load import load_tokenizer

    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.merge:
        from _vs_trl_report import merge

        return merge(a.merge, out)
    if a.tiny:
        a.model = build_tiny(out / "tiny-model")
    if "trl" in a.arms:
        try:
            import trl  # noqa: F401
        except ImportError:
            print("trl is not installed (pip install trl): running aha's arm only", file=sys.stderr)
            a.arms = [x for x in a.arms if x != "trl"]
            if not a.arms:
                raise SystemExit("nothing to run: add --arms aha, or pip install trl") from None
    task = get_task(a.task, **a.task_options)
    tok = load_tokenizer(str(a.model))
    test = task.dataset("test")
    held_out = [test[i] for i in range(min(a.eval_size, len(test)))]
    specs = [(n, (task.accuracy_reward if n == "accuracy" else n, w)) for n, w in a.rewards]
    cuda = a.device == "cuda"
    runs = []
    base = evaluate_model(a, a.model, held_out, task, 0, out / "eval" / "base")
    print(
        f"base model: held-out pass@1 {base['pass1']:.3f}, format {base['format']:.3f}", flush=True
    )
    for seed in a.seeds:
        prompts, rows = prompt_rows(a, task, tok, seed)
        for arm in a.arms:
            run_dir = out / arm / f"seed{seed}"
            print(f"== {arm}, seed {seed}", flush=True)
            if arm == "aha":
                curve, info, model_dir = run_aha(a, seed, run_dir)
            else:
                curve, info, model_dir = run_trl(a, seed, prompts, rows, specs, run_dir, cuda)
            free_memory()
            ev = evaluate_model(
                a, model_dir, held_out, task, seed, out / "eval" / f"{arm}-seed{seed}"
            )
            runs.append({"arm": arm, "seed": seed, "curve": curve, "info": info, "eval": ev})
            if not a.keep_models:
                shutil.rmtree(model_dir, ignore_errors=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    settings["device_name"] = torch.cuda.get_device_name() if cuda else "cpu"
    settings["versions"] = _versions()
    return write_report(out, settings, base, runs)


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "accelerate", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    main()
