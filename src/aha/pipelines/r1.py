"""R1: the four-stage recipe of the R1 paper (section 2.3), each stage's output feeding the next.

    01-cold-start  SFT of the base model on a few thousand long chain-of-thought examples (readable format)
    02-rl          GRPO from the cold-start model: accuracy + format (+ language-consistency) rewards
    03-sample      rejection sampling from the RL model: k samples per prompt, keep the verified, readable ones
    04-sft         SFT on the sampled traces (+ the cold-start rows); from the *base* model by default, as the
                   paper does ("fine-tune DeepSeek-V3-Base for two epochs"); sft_init=cold_start|rl starts from
                   those checkpoints instead
    05-rl          a second GRPO stage from that model
`cold_start_rows: N` writes the cold-start rows first (OUT/cold-start.jsonl: N worked solutions of the task's
*train* rows in the R1 format, each verified by the task's reward; aha.data.cold_start) when no
cold_start.data.path is given. 00-base evaluates the base model; every model-producing stage is evaluated on the task's test split when
eval.size > 0. The paper's non-reasoning SFT data (writing, QA) has no counterpart here: add such rows to
sft.data.path yourself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from ..config import ConfigError, check
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
class R1PipelineConfig:
    RENAMED: ClassVar[dict[str, str]] = EVAL_RENAMED

    model: str = "tiny-base"  # the base model
    task: TaskConfig = field(default_factory=TaskConfig)  # used by every stage
    cold_start: SFTConfig = field(
        default_factory=SFTConfig
    )  # set cold_start.data.path (question/completion rows)
    rl: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)  # data.path is set by the pipeline
    rl2: TrainConfig = field(default_factory=TrainConfig)
    # the model the second SFT starts from (R1: base)
    sft_init: Literal["base", "cold_start", "rl"] = "base"
    sft_include_cold_start: bool = True  # the second SFT also trains on the cold-start rows
    cold_start_rows: int = (
        0  # > 0: write this many program-written cold-start rows (see the docstring)
    )
    eval: StageEvalConfig = eval_section()
    seed: int = 0  # every stage's seed
    out: str = "runs/r1"  # the pipeline directory: a subdirectory and manifest per stage

    def __post_init__(self):
        check_task(self.task)
        check_wired(
            self,
            {
                "cold_start": RUN_WIRED,
                "rl": RUN_WIRED,
                "sample": SAMPLE_WIRED,
                "sft": (*RUN_WIRED, "data.path"),
                "rl2": RUN_WIRED,
            },
        )
        check(self.cold_start_rows >= 0, "cold_start_rows", "must be >= 0 (0 = rows from a file)")
        if self.cold_start_rows and self.cold_start.data.path:
            raise ConfigError(
                "cold_start_rows",
                "give either cold_start_rows (rows written by aha) or cold_start.data.path, not both",
            )


def write_cold_start(cfg: R1PipelineConfig, log=print) -> str:
    """OUT/cold-start.jsonl with cfg.cold_start_rows rows (kept when it is already complete)."""
    import json

    from ..data import get_task
    from ..data.cold_start import cold_start_rows

    path = Path(cfg.out) / "cold-start.jsonl"
    if path.is_file() and sum(1 for _ in path.open()) == cfg.cold_start_rows:
        return str(path)
    rows = cold_start_rows(get_task(cfg.task.name, **cfg.task.options), cfg.cold_start_rows)
    if len(rows) < cfg.cold_start_rows:
        raise ConfigError(
            "cold_start_rows",
            f"the task's train split gave only {len(rows)} verified rows; ask for at most that many",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    log(f"cold start: {len(rows)} worked solutions of train rows -> {path}")
    return str(path)


def run_r1(cfg: R1PipelineConfig, log=print) -> dict:
    if cfg.cold_start_rows:
        cfg.cold_start.data.path = [write_cold_start(cfg, log)]
    if not cfg.cold_start.data.path:
        raise ConfigError(
            "cold_start.data.path",
            "the cold-start stage needs long chain-of-thought rows; set "
            "cold_start.data.path=FILE.jsonl (question + completion), or cold_start_rows=N to have aha "
            "write N worked solutions of the task's train rows",
        )
    missing = [
        f for f in cfg.cold_start.data.path if not f.startswith("hf:") and not Path(f).exists()
    ]
    if missing:
        raise ConfigError(
            "cold_start.data.path",
            f"{missing[0]} does not exist; write the cold-start rows there first "
            f"(for the chain task of `aha demo`: python benchmarks/r1_figures.py "
            f"cold-start --out {missing[0]})",
        )
    p, task, seed, ev = Pipeline(cfg.out, "r1", log), cfg.task, cfg.seed, cfg.eval
    if ev.enabled and ev.base:
        p.stage(
            "00-base",
            "eval",
            {"model": cfg.model, "task": task, "eval": ev},
            {"model": cfg.model},
            lambda d: run_eval(cfg.model, task, ev, seed, d),
        )
    cs = wire_sft(
        cfg.cold_start, model=cfg.model, task=task, seed=seed, out=p.out / "01-cold-start" / "run"
    )
    cold = p.stage(
        "01-cold-start",
        "sft",
        cs,
        {"model": cfg.model, "data": cs.data.path},
        lambda d: run_sft(cs, d, ev, task),
    )["model"]
    rl = wire(cfg.rl, model=cold, task=task, seed=seed, out=p.out / "02-rl" / "run")
    rl_model = p.stage("02-rl", "rl", rl, {"model": cold}, lambda d: run_rl(rl, d, ev))["model"]
    sm = wire_sample(cfg.sample, model=rl_model, task=task, seed=seed, out=p.out / "03-sample")
    data = p.stage("03-sample", "sample", sm, {"model": rl_model}, lambda d: run_sample(sm, d))[
        "data"
    ]
    init = {"base": cfg.model, "cold_start": cold, "rl": rl_model}[cfg.sft_init]
    paths = [data] + (list(cs.data.path) if cfg.sft_include_cold_start else [])
    sf = wire_sft(
        cfg.sft, model=init, task=task, seed=seed, out=p.out / "04-sft" / "run", data=paths
    )
    sft_model = p.stage(
        "04-sft", "sft", sf, {"model": init, "data": paths}, lambda d: run_sft(sf, d, ev, task)
    )["model"]
    rl2 = wire(cfg.rl2, model=sft_model, task=task, seed=seed, out=p.out / "05-rl" / "run")
    p.stage("05-rl", "rl", rl2, {"model": sft_model}, lambda d: run_rl(rl2, d, ev))
    return p.finish()
