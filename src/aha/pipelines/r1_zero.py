"""R1-Zero: reinforcement learning straight from the base model, no supervised data (R1 paper, section 2.2).

    base --GRPO (accuracy + format rewards, r1-zero template)--> R1-Zero model

Stages (under OUT/): 00-base (evaluation of the base model, optional), 01-rl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..schema import TaskConfig
from ..train.config import TrainConfig
from .manifest import Pipeline
from .stages import (
    EVAL_RENAMED,
    RUN_WIRED,
    StageEvalConfig,
    check_task,
    check_wired,
    eval_section,
    run_eval,
    run_rl,
    wire,
)


@dataclass
class R1ZeroPipelineConfig:
    RENAMED: ClassVar[dict[str, str]] = EVAL_RENAMED

    model: str = "tiny-base"  # the base model
    task: TaskConfig = field(
        default_factory=TaskConfig
    )  # used by every stage (their own task is replaced)
    rl: TrainConfig = field(
        default_factory=TrainConfig
    )  # model.path, task, seed, out are set by the pipeline
    eval: StageEvalConfig = eval_section()
    seed: int = 0  # every stage's seed
    out: str = "runs/r1-zero"  # the pipeline directory: a subdirectory and manifest per stage

    def __post_init__(self):
        check_task(self.task)
        check_wired(self, {"rl": RUN_WIRED})


def run_r1_zero(cfg: R1ZeroPipelineConfig, log=print) -> dict:
    p = Pipeline(cfg.out, "r1-zero", log)
    if cfg.eval.enabled and cfg.eval.base:
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
