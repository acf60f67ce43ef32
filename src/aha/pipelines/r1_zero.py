"""R1-Zero: reinforcement learning straight from the base model, no supervised data (R1 paper, section 2.2).

    base --GRPO (accuracy + format rewards, r1-zero template)--> R1-Zero model

Stages (under OUT/): 00-base (evaluation of the base model, optional), 01-rl.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..train.config import TaskConfig, TrainConfig
from .manifest import Pipeline
from .stages import PipelineEvalConfig, run_eval, run_rl, wire


@dataclass
class R1ZeroPipelineConfig:
    model: str = "tiny-base"  # the base model
    task: TaskConfig = field(
        default_factory=TaskConfig
    )  # used by every stage (their own task is replaced)
    rl: TrainConfig = field(
        default_factory=TrainConfig
    )  # model.path, task, seed, out are set by the pipeline
    eval: PipelineEvalConfig = field(default_factory=PipelineEvalConfig)
    seed: int = 0
    out: str = "runs/r1-zero"


def run_r1_zero(cfg: R1ZeroPipelineConfig, log=print) -> dict:
    p = Pipeline(cfg.out, "r1-zero", log)
    if cfg.eval.size and cfg.eval.base:
        p.stage(
            "00-base",
            "eval",
            {"model": cfg.model, "task": cfg.task, "eval": cfg.eval},
            {"model": cfg.model},
            lambda d: run_eval(cfg.model, cfg.task, cfg.eval, cfg.seed, d),
        )
    rl = wire(cfg.rl, model=cfg.model, task=cfg.task, seed=cfg.seed, out=p.out / "01-rl" / "run")
    p.stage("01-rl", "rl", rl, {"model": cfg.model}, lambda d: run_rl(rl, d, cfg.eval))
    return p.finish()
