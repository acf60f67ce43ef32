"""The stage runners the pipelines chain: RL, SFT, rejection sampling, evaluation.

Each takes a stage config with the pipeline's wiring already applied (model path, task, seed) and a stage
directory, runs the stage there (resuming from its checkpoints if it was interrupted), and returns
(outputs, figures) for the manifest. A stage interrupted by Ctrl-C / SIGTERM raises StageInterrupted, so
no manifest marks it complete.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, check, section
from ..schema import HeldOutConfig, TaskConfig
from .manifest import StageInterrupted


@dataclass
class StageEvalConfig(HeldOutConfig):
    """The held-out evaluation of every model a stage produces (and of the starting models)."""

    base: bool = True  # also evaluate the starting model(s)


# The evaluation's sampling keys used to sit directly under `eval` (renamed when it became the shared section).
EVAL_RENAMED = {
    "eval.size": "eval.limit",
    "eval.temperature": "eval.sampling.temperature",
    "eval.top_p": "eval.sampling.top_p",
    "eval.max_new_tokens": "eval.sampling.max_new_tokens",
    "eval.batch": "eval.batch_size",
}


def check_task(task: TaskConfig) -> None:
    """A pipeline's task feeds every stage: RL draws from train, sampling from train, evaluation from test."""
    check(
        task.split is None,
        "task.split",
        "a pipeline's stages choose their own split (RL and sampling: train, evaluation: test); "
        "remove task.split",
    )


def eval_section():
    """A pipeline's `eval` field: 100 test problems x 4 samples, 256 new tokens, 200 bootstrap resamples."""
    return section(
        StageEvalConfig,
        limit=100,
        batch_size=64,
        n_boot=200,
        sampling={"max_new_tokens": 256, "seed": None},
    )


RUN_WIRED = ("model.path", "task", "seed", "out")  # what wire() sets in an RL or SFT stage
SAMPLE_WIRED = ("model.path", "task", "sampling.seed", "out")  # what wire_sample() sets


def check_wired(pipeline, stages: dict[str, tuple[str, ...]], model_key: str = "model") -> None:
    """A key the pipeline sets in a stage (wire(): its model, task, seed, out; the sampled rows of the SFT
    after sampling) given by the user: a ConfigError naming the pipeline's own key (it was replaced silently)."""
    why = {
        "model.path": f"the pipeline starts each stage from the one before it; set {model_key}= instead",
        "task": "the pipeline sets every stage's task; set task.* instead",
        "seed": "the pipeline sets every stage's seed; set seed= instead",
        "sampling.seed": "the pipeline sets every stage's seed; set seed= instead",
        "out": "the pipeline puts each stage in a folder under out=; set out= instead",
        "data.path": "this stage trains on the rows the sampling stage kept; remove the key",
    }
    for name, wired in stages.items():
        stage, fresh = getattr(pipeline, name), None
        for key in wired:
            fresh = fresh or type(stage)()
            if _dotted(stage, key) != _dotted(fresh, key):
                raise ConfigError(f"{name}.{key}", why[key])


def _dotted(obj, key: str):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def wire(cfg, *, model: str, task: TaskConfig, seed: int, out: Path):
    """A copy of a stage config pointed at `model`, `task`, `seed` and `out` (what the pipeline owns)."""
    cfg = copy.deepcopy(cfg)
    cfg.model.path, cfg.seed, cfg.out, cfg.task = model, seed, str(out), copy.deepcopy(task)
    return cfg


def wire_sft(
    cfg, *, model: str, task: TaskConfig, seed: int, out: Path, data: list[str] | None = None
):
    """wire() + the data: `data` replaces data.path when given; rows are rendered with the task's template
    (as the RL stage renders its prompts) unless data.template is set."""
    cfg = wire(cfg, model=model, task=task, seed=seed, out=out)
    if data is not None:
        cfg.data.path = list(data)
    if cfg.data.template is None:
        cfg.data.template, cfg.data.system, cfg.data.prefill = (
            task.template,
            task.system,
            task.prefill,
        )
    return cfg


def wire_sample(cfg, *, model: str, task: TaskConfig, seed: int, out: Path):
    """A copy of a SampleConfig drawing from `model` on `task` (its train split unless task.split says) with
    sampling seed `seed`, writing to `out`."""
    cfg = copy.deepcopy(cfg)
    cfg.model.path, cfg.sampling.seed, cfg.out = model, seed, str(out)
    cfg.task = dataclasses.replace(task, split=task.split or "train")
    return cfg


def _last_metrics(run: Path) -> dict:
    lines = (
        (run / "metrics.jsonl").read_text().splitlines()
        if (run / "metrics.jsonl").is_file()
        else []
    )
    return json.loads(lines[-1]) if lines else {}


def final_model(cfg) -> str:
    """The stage's trained model as a plain HF directory. A LoRA checkpoint holds the base weights plus adapter/,
    which the next stage would not apply, so the adapter is merged into OUT/<stage>/merged once."""
    from ..train import checkpoint as ckpt  # torch: imported when a stage runs, not for its config

    last = ckpt.latest_checkpoint(cfg.out)
    if cfg.model.lora.r == 0:
        return str(last)
    merged = Path(cfg.out).parent / "merged"
    if not (merged / "config.json").is_file():
        from peft import PeftModel

        from ..models.load import load_model

        base, tok = load_model(
            cfg.model.path,
            device="cpu",
            dtype="float32",
            trust_remote_code=cfg.model.trust_remote_code,
        )
        tmp = merged.with_suffix(".tmp")  # renamed when complete: never a half model
        PeftModel.from_pretrained(base, str(last / "adapter")).merge_and_unload().save_pretrained(
            tmp
        )
        tok.save_pretrained(tmp)
        tmp.replace(merged)
    return str(merged)


def _resume(cfg) -> None:
    """A stage re-entered after an interruption continues its run (from step 0 if it saved no checkpoint)."""
    from ..train.run_dir import holds_run

    cfg.resume, cfg.overwrite = holds_run(cfg.out) is not None, False


def _stopped(kind: str, summary: dict, steps: int | None = None) -> None:
    """StageInterrupted (no manifest) when the stage's run stopped early, with the run's exit code."""
    if summary.get("stopped_early"):
        total = f"/{steps}" if steps else ""
        how = "rerun the same command"
        if (
            summary.get("stopped") == "oom"
        ):  # the run's own line named the keys that lower its memory
            how += " with less memory (the keys above)"
        # the run's own line above says "resume=true": the rerun of the pipeline passes it to the stage
        how += " to resume (the pipeline resumes the stage itself)"
        raise StageInterrupted(
            f"{kind} stopped at step {summary['steps']}{total} ({summary.get('stopped')}); {how}",
            code=summary.get("exit_code") or 130,
        )


def run_rl(cfg, stage_dir: Path, ev: StageEvalConfig) -> tuple[dict, dict]:
    """GRPO (or PPO with algorithm.name=ppo) in stage_dir/run; the last checkpoint is the output model."""
    from ..train import train

    _resume(cfg)
    summary = train(cfg)
    _stopped("RL", summary, cfg.steps)
    model = final_model(cfg)
    last = _last_metrics(Path(cfg.out))
    figures = {
        "steps": summary["steps"],
        "train": {
            k: v for k, v in last.items() if k.startswith(("reward/", "len/", "eval/")) or k == "kl"
        },
    }
    return {"model": model, "run": cfg.out}, with_eval(
        figures, model, cfg.task, ev, cfg.seed, stage_dir
    )


def run_sft(cfg, stage_dir: Path, ev: StageEvalConfig, task: TaskConfig) -> tuple[dict, dict]:
    from ..train.sft import SFTTrainer

    _resume(cfg)
    trainer = SFTTrainer(cfg)
    try:
        summary = trainer.fit()
        stats = trainer.data_stats
    finally:
        trainer.close()
    _stopped("SFT", summary)
    model = final_model(cfg)
    rows = [json.loads(l) for l in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    figures = {
        "steps": summary["steps"],
        "data": stats,
        "loss_first": rows[0]["loss"],
        "loss_last": rows[-1]["loss"],
    }
    return {"model": model, "run": cfg.out}, with_eval(
        figures, model, task, ev, cfg.seed, stage_dir
    )


def run_sample(cfg, stage_dir: Path) -> tuple[dict, dict]:
    from ..sample import sample

    stats = sample(cfg)
    data = Path(cfg.out) / "data.jsonl"
    if stats.get("kept", 0) == 0:
        raise RuntimeError(
            f"rejection sampling kept no sample ({stats}); sample more prompts (sample.num_prompts), "
            "raise sample.k, or loosen sample.filters"
        )
    return {"data": str(data)}, {"sample": stats}


def run_eval(
    model: str, task: TaskConfig, ev: StageEvalConfig, seed: int, stage_dir: Path
) -> tuple[dict, dict]:
    """Evaluate a model that no stage produced (the base model, a given teacher)."""
    figures = with_eval({}, model, task, ev, seed, stage_dir)
    return {"results": str(stage_dir / "eval" / "results.json")}, figures


def with_eval(
    figures: dict, model: str, task: TaskConfig, ev: StageEvalConfig, seed: int, stage_dir: Path
) -> dict:
    """figures + {"eval": held-out pass1, format, length, ...} of `model` (nothing when ev.limit == 0)."""
    if not ev.enabled:
        return figures
    import torch

    from ..eval import evaluate_task
    from ..rollout.factory import make_engine
    from ..schema import ModelConfig

    lm, tok = ModelConfig(path=model).load(seed=seed)
    lm.eval()
    with torch.no_grad():
        res = evaluate_task(
            make_engine("auto", lm, tok),
            tok,
            task,
            ev,
            seed=seed,
            out_dir=stage_dir / "eval",
            log=print,  # a line every ~10 s while it runs
        )
    keep = ("pass1", "format", "len_mean", "truncated", "reflection_rate")
    out = {k: res.metrics[k] for k in keep if k in res.metrics}
    out.update({f"{k}_ci": list(res.ci[k]) for k in ("pass1", "format") if k in res.ci})
    out["n_problems"], out["k"] = res.n_problems, res.k
    return {**figures, "eval": out}
