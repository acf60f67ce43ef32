"""The TRL arm of benchmarks/vs_trl.py: aha's settings as a GRPOConfig, aha's rewards as TRL reward functions,
and a GRPOTrainer whose generate and reward calls are timed. `trl` is imported only inside the functions that
need it, so this module (the config mapping and the reward wrapper) is importable and testable without it.

TRL calls a reward function as f(prompts=, completions=, completion_ids=, **columns, trainer_state=,
log_extra=, log_metric=), the dataset's extra columns as lists with one entry per completion, and expects one
float (or None: "does not apply", NaN in its table) per completion. `AhaReward` rebuilds each completion's
task row from those columns and scores it with aha's own RewardRunner, so both arms score through the same code;
`check_rewards` proves it on hand-written completions through TRL's own reward path before training.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import torch

from aha.rewards import RewardRunner, reference_answer


class AhaReward:
    """One aha reward spec as a TRL reward function (see module docstring). `name` is what TRL logs it as
    (rewards/<name>/mean); `spec` is the aha reward name (the task's verifier for "accuracy")."""

    def __init__(self, name: str, spec: str, row_keys: list[str], *, think_prefilled: bool = False):
        self.__name__ = name
        self.row_keys = list(row_keys)
        self.runner = RewardRunner([(spec, 1.0)], think_prefilled=think_prefilled)

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        rows = [
            {k: columns[k][i] for k in self.row_keys if k in columns}
            for i in range(len(completions))
        ]
        scores = self.runner.score(list(completions), rows).scores[
            :, 0
        ]  # (N,) NaN = does not apply
        return [None if np.isnan(s) else float(s) for s in scores]

    def close(self) -> None:
        self.runner.close()


def trl_config_kwargs(a, seed: int, out_dir: Path, cuda: bool) -> dict:
    """GRPOConfig keyword arguments equal to aha's GRPO settings in `a` (vs_trl.py's docstring has the table).

    One optimizer step sees P prompts x G completions: TRL generates them in one call
    (generation_batch_size = per_device_train_batch_size * gradient_accumulation_steps = P * G) and
    accumulates gradients over micro-batches of `a.micro` sequences, as aha does.
    """
    n = a.prompts * a.group
    if n % a.micro:
        raise ValueError(f"--micro {a.micro} must divide prompts x group = {n}")
    return dict(
        output_dir=str(out_dir),
        seed=seed,
        max_steps=a.steps,
        per_device_train_batch_size=a.micro,
        gradient_accumulation_steps=n // a.micro,
        num_generations=a.group,
        max_completion_length=a.max_new_tokens,
        temperature=a.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=a.lr,
        lr_scheduler_type="constant_with_warmup" if a.warmup else "constant",
        warmup_steps=a.warmup,
        optim="adamw_torch",
        adam_beta1=0.9,
        adam_beta2=0.99,  # aha's default betas (0.9, 0.99); transformers' default is 0.999
        adam_epsilon=1e-8,
        weight_decay=0.0,
        max_grad_norm=a.max_grad_norm,
        beta=a.beta,
        # TRL 1.16 multiplies the k3 KL by the (differentiable, value-1) importance ratio by default (DeepSeek-V3.2's
        # unbiased KL gradient); aha's GRPO uses plain k3 (DeepSeekMath eq. 4), so switch it off.
        use_bias_correction_kl=False,
        epsilon=0.2,
        epsilon_high=0.2,
        loss_type="grpo",  # per-sequence token mean, then mean over sequences = aha's seq-mean-token-mean
        scale_rewards="group",
        multi_objective_aggregation="sum_then_normalize",
        importance_sampling_level="token",
        num_iterations=1,
        mask_truncated_completions=False,
        reward_weights=[w for _, w in a.rewards],
        shuffle_dataset=False,  # the dataset is already in aha's prompt order (see vs_trl.prompt_rows)
        use_vllm=False,
        gradient_checkpointing=False,
        bf16=cuda,  # TRL's mixed precision: fp32 weights and AdamW, bf16 autocast
        use_cpu=not cuda,
        model_init_kwargs={"dtype": "float32"},
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
    )


def sample_completions(row: dict) -> list[str]:
    """Hand-written completions for `row` that exercise every branch of the accuracy and format rewards."""
    ref = reference_answer(row.get("answer")) or str(row.get("solution") or row.get("target") or 42)
    return [
        f"<think>\nadd the digits\n</think>\n<answer>{ref}</answer>",  # right, in format
        f"<think>hmm</think> <answer>{ref}1</answer>",  # wrong, in format
        f"The answer is {ref}.",  # right, no tags
        "",
        f"<think>a</think><think>b</think><answer>{ref}</answer>",  # two think blocks
        f"<answer>{ref}</answer> and more text",
    ]


class _Clock:
    """Per optimizer step: wall time (device synchronised) and the time inside generate / reward calls."""

    def __init__(self, sync):
        self.sync, self.steps, self.logs, self.spans = sync, [], {}, {}

    def add(self, kind: str, seconds: float) -> None:
        self.spans[kind] = self.spans.get(kind, 0.0) + seconds


def _callback(clock: _Clock):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            clock.sync()
            clock.spans, clock.t0 = {}, time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            clock.sync()
            clock.steps.append({"step_s": time.perf_counter() - clock.t0, **clock.spans})

        def on_log(self, args, state, control, logs=None, **kw):
            # Per-step training logs (logging_steps=1) have "reward"; the final summary has not.
            if logs and "reward" in logs:
                clock.logs[state.global_step] = dict(logs)
                step_s = clock.steps[-1]["step_s"] if clock.steps else float("nan")
                print(
                    f"trl step {state.global_step}/{state.max_steps} | reward {logs['reward']:.3f} | "
                    f"len {logs.get('completions/mean_length', float('nan')):.0f} | "
                    f"kl {logs.get('kl', 0.0):.4f} | s {step_s:.1f}",
                    flush=True,
                )

    return StepClock()


def _timed_trainer(clock: _Clock):
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with its generate and reward calls timed; no change to what it computes."""

        def _generate(self, prompts):
            clock.sync()
            t0 = time.perf_counter()
            out = super()._generate(prompts)
            clock.sync()
            clock.add("generate_s", time.perf_counter() - t0)
            return out

        def _calculate_rewards(self, *args, **kwargs):
            t0 = time.perf_counter()
            out = super()._calculate_rewards(*args, **kwargs)
            clock.add("reward_s", time.perf_counter() - t0)
            return out

    return TimedGRPOTrainer


def check_rewards(trainer, specs, rows: list[dict], think_prefilled: bool) -> dict:
    """Score hand-written completions of the first rows through TRL's own reward path (the dataset's columns,
    TRL's reward weights) and through aha's RewardRunner on the original rows; they must agree exactly."""
    comps, inputs, aha_rows = [], [], []
    for i, row in enumerate(rows[:4]):
        for c in sample_completions(row):
            comps.append(c)
            inputs.append(trainer.train_dataset[i])
            aha_rows.append(row)
    ids = [trainer.processing_class(c, add_special_tokens=False).input_ids for c in comps]
    prompts = [x["prompt"] for x in inputs]
    trl_scores = trainer._calculate_rewards(inputs, prompts, comps, ids).float().cpu().numpy()
    w = trainer.reward_weights.float().cpu().numpy()
    trl_total = np.where(
        np.isnan(trl_scores).all(1), np.nan, np.nansum(trl_scores * w, axis=1)
    )  # (N,) TRL's sum_then_normalize total
    with RewardRunner(specs, think_prefilled=think_prefilled) as runner:
        aha = runner.score(comps, aha_rows)
    diff = max(
        float(np.nanmax(np.abs(trl_scores - aha.scores), initial=0.0)),
        float(np.nanmax(np.abs(trl_total - aha.total), initial=0.0)),
    )
    same_nan = bool((np.isnan(trl_scores) == np.isnan(aha.scores)).all())
    ok = same_nan and diff < 1e-6
    if not ok:
        raise RuntimeError(
            f"TRL's wrapped rewards differ from aha's on hand-written completions (max diff {diff}, "
            f"same NaN pattern {same_nan}); the comparison would be meaningless"
        )
    return {
        "completions": len(comps),
        "max_abs_diff": diff,
        "total_mean": float(np.nanmean(aha.total)),
        "identical": ok,
    }


def build_trl(a, seed: int, prompts: list[str], rows: list[dict], specs, out: Path, cuda: bool):
    """A timed GRPOTrainer for `prompts` (raw text, in aha's order; rows are their task rows) with aha's rewards
    -> (trainer, clock, reward functions). The caller closes the reward functions."""
    from datasets import Dataset
    from trl import GRPOConfig

    from aha.models.load import load_tokenizer

    clock = _Clock(torch.cuda.synchronize if cuda else (lambda: None))
    tok = load_tokenizer(str(a.model))  # the tokenizer aha uses, so both arms tokenise the same way
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    keys = sorted({k for r in rows for k in r})
    ds = Dataset.from_list([{"prompt": p, **r} for p, r in zip(prompts, rows)])
    think = a.prefill.strip().startswith("<think>")
    funcs = [AhaReward(name, spec, keys, think_prefilled=think) for name, (spec, _) in specs]
    trainer = _timed_trainer(clock)(
        model=str(a.model),
        reward_funcs=funcs,
        args=GRPOConfig(**trl_config_kwargs(a, seed, out, cuda)),
        train_dataset=ds,
        processing_class=tok,
        callbacks=[_callback(clock)],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(
        PrinterCallback
    )  # its raw log dicts; the clock prints one line per step
    return trainer, clock, funcs


def run_trl(a, seed: int, prompts: list[str], rows: list[dict], specs, out: Path, cuda: bool):
    """Train with TRL's GRPOTrainer on `prompts` -> (per-step curve, info, model dir)."""
    trainer, clock, funcs = build_trl(a, seed, prompts, rows, specs, out, cuda)
    tok = trainer.processing_class
    try:
        think = a.prefill.strip().startswith("<think>")
        info = {
            "reward_check": check_rewards(trainer, [s for _, s in specs], rows, think),
            "eos_ids": list(trainer.eos_token_ids),
            "prompt_tokens_identical": all(
                tok(text=p)["input_ids"] == tok(p, add_special_tokens=False).input_ids
                for p in prompts[:64]
            ),
        }
        t0 = time.perf_counter()
        trainer.train()
        info["wall_s"] = time.perf_counter() - t0
        final = out / "final"
        trainer.save_model(str(final))
    finally:
        for f in funcs:
            f.close()
    curve = []
    for step, timing in enumerate(clock.steps, start=1):
        log = clock.logs.get(step, {})
        curve.append(
            {
                "step": step,
                "reward": log.get("reward"),
                "len": log.get("completions/mean_length"),
                **{f"reward/{n}": log.get(f"rewards/{n}/mean") for n, _ in specs},
                "kl": log.get("kl"),
                **timing,
            }
        )
    del trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return curve, info, final
