"""Distillation (R1 paper, section 2.4): a small student fine-tuned (SFT only) on a strong teacher's verified
traces. The paper's claim: this beats RL on the small model ("distilling more powerful models into smaller ones
yields excellent results, whereas smaller models relying on [...] RL require enormous computational power").

    00-teacher-rl  (train_teacher=true) GRPO of the teacher first; R1 distils from its RL-trained model
    01-sample      rejection sampling of the teacher (local, or behind an OpenAI-compatible server with
                   sample.engine=openai: then `teacher` only names the tokenizer)
    02-sft         SFT of the student on the kept traces
    03-student-rl  (rl_baseline=true) the same student trained with RL alone, for the comparison
Evaluations: 00-teacher / 00-student (starting models, eval.base) and every trained model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import ConfigError
from ..sample import SampleConfig
from ..schema import TaskConfig
from ..train.config import TrainConfig
from ..train.sft_config import SFTConfig
from .manifest import Pipeline
from .stages import (
    EVAL_RENAMED,
    RUN_WIRED,
    SAMPLE_WIRED,
    StageEvalConfig,
    check_task,
    check_wired,
    eval_section,
    run_eval,
    run_rl,
    run_sample,
    run_sft,
    wire,
    wire_sample,
    wire_sft,
)


@dataclass
class DistillPipelineConfig:
    RENAMED: ClassVar[dict[str, str]] = EVAL_RENAMED

    teacher: str = ""  # the teacher model (with sample.engine=openai: its tokenizer)
    train_teacher: bool = False  # RL-train the teacher first with teacher_rl
    teacher_rl: TrainConfig = field(default_factory=TrainConfig)
    student: str = "tiny-base"  # the student model (fine-tuned on the teacher's traces)
    task: TaskConfig = field(default_factory=TaskConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)  # data.path is set by the pipeline
    rl_baseline: bool = False  # also RL-train the student alone with student_rl
    student_rl: TrainConfig = field(default_factory=TrainConfig)
    eval: StageEvalConfig = eval_section()
    seed: int = 0  # every stage's seed
    out: str = "runs/distill"  # the pipeline directory: a subdirectory and manifest per stage

    def __post_init__(self):
        check_task(self.task)
        stages = {"sample": SAMPLE_WIRED, "sft": (*RUN_WIRED, "data.path")}
        stages |= {"teacher_rl": RUN_WIRED, "student_rl": RUN_WIRED}
        check_wired(self, stages, model_key="teacher= or student")


def run_distill(cfg: DistillPipelineConfig, log=print) -> dict:
    if not cfg.teacher:
        raise ConfigError(
            "teacher",
            "name the teacher model (a path, hub id or tiny-base), e.g. teacher=runs/r1/05-rl/...",
        )
    if cfg.train_teacher and cfg.sample.engine == "openai":
        raise ConfigError(
            "train_teacher",
            "a teacher behind a server cannot be RL-trained here; set train_teacher=false",
        )
    p, task, seed, ev = Pipeline(cfg.out, "distill", log), cfg.task, cfg.seed, cfg.eval
    teacher = cfg.teacher
    if ev.enabled and ev.base:
        if cfg.sample.engine != "openai":
            p.stage(
                "00-teacher",
                "eval",
                {"model": teacher, "task": task, "eval": ev},
                {"model": teacher},
                lambda d: run_eval(teacher, task, ev, seed, d),
            )
        p.stage(
            "00-student",
            "eval",
            {"model": cfg.student, "task": task, "eval": ev},
            {"model": cfg.student},
            lambda d: run_eval(cfg.student, task, ev, seed, d),
        )
    if cfg.train_teacher:
        trl = wire(
            cfg.teacher_rl, model=teacher, task=task, seed=seed, out=p.out / "00-teacher-rl" / "run"
        )
        teacher = p.stage(
            "00-teacher-rl", "rl", trl, {"model": cfg.teacher}, lambda d: run_rl(trl, d, ev)
        )["model"]
    sm = wire_sample(cfg.sample, model=teacher, task=task, seed=seed, out=p.out / "01-sample")
    data = p.stage("01-sample", "sample", sm, {"model": teacher}, lambda d: run_sample(sm, d))[
        "data"
    ]
    sf = wire_sft(
        cfg.sft, model=cfg.student, task=task, seed=seed, out=p.out / "02-sft" / "run", data=[data]
    )
    p.stage(
        "02-sft",
        "sft",
        sf,
        {"model": cfg.student, "data": [data]},
        lambda d: run_sft(sf, d, ev, task),
    )
    if cfg.rl_baseline:
        srl = wire(
            cfg.student_rl,
            model=cfg.student,
            task=task,
            seed=seed,
            out=p.out / "03-student-rl" / "run",
        )
        p.stage("03-student-rl", "rl", srl, {"model": cfg.student}, lambda d: run_rl(srl, d, ev))
    return p.finish()
