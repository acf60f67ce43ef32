"""Typed config of the SFT stage (`aha sft CONFIG key.sub=value ...`). Model, task, optimizer, checkpoint and
held-out evaluation sections are the RL stage's own classes (with SFT's defaults), so a recipe's blocks paste
between stages unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..config import check, section
from ..schema import HeldOutConfig, ModelConfig, TaskConfig
from .config import (
    EVAL_RENAMED,
    CheckpointConfig,
    OptimConfig,
    RunLoggingConfig,
    check_resume_overwrite,
)


@dataclass
class SFTDataConfig:
    # .jsonl/.json/.csv/.parquet files, dataset directories or hub ids (aha.data.read)
    path: list[str] = field(default_factory=list)
    split: str = "train"  # for dataset directories and hub ids
    config: str | None = None  # a hub dataset's config name, e.g. main for openai/gsm8k
    prompt_key: str = "prompt"  # the prompt column of prompt/completion rows
    completion_key: str = "completion"  # the column trained on (the loss is on it only)
    messages_key: str = "messages"  # chat-format rows
    text_key: str = "text"  # language-modeling rows (TRL's "text" format): trained on whole
    question_key: str = "question"  # the column data.template renders into the prompt
    # set (r1-zero | chat | plain | "...{prompt}..."): the prompt is rendered from row[question_key], exactly
    # as the RL stage renders its prompts; null: the row's prompt as is
    template: str | None = None
    system: str | None = None  # system prompt for template=chat
    prefill: str = ""  # e.g. "<think>": then completions start after it
    max_length: int = 1024  # tokens per example (longer ones are cut) and per packed row
    packing: bool = True  # several documents per row, no attention across them
    # append eos to prompt/completion rows (chat templates end turns themselves)
    add_eos: bool = True
    limit: int | None = None  # use the first N rows only

    def __post_init__(self):
        check(self.max_length >= 2, "max_length", f"must be >= 2 tokens, got {self.max_length}")
        check(
            self.limit is None or self.limit >= 1,
            "limit",
            f"must be >= 1 or null, got {self.limit}",
        )


@dataclass
class SFTBatchConfig:
    batch_size: int = 32  # examples (documents) per optimizer step
    micro_batch_size: int = 8  # rows per forward/backward (a packed row holds several documents)
    micro_batch_tokens: int = 0  # > 0: also keep each micro-batch under this many padded tokens

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(
            self.micro_batch_size >= 1,
            "micro_batch_size",
            f"must be >= 1, got {self.micro_batch_size}",
        )
        check(
            self.micro_batch_tokens >= 0, "micro_batch_tokens", "must be >= 0 (0 = no token budget)"
        )


@dataclass
class SFTConfig:
    RENAMED: ClassVar[dict[str, str]] = {
        **EVAL_RENAMED,
        "logging.eval_max_new_tokens": "eval.sampling.max_new_tokens",
    }

    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    optim: OptimConfig = section(OptimConfig, lr=1e-5, schedule="cosine", min_lr_ratio=0.1)
    batch: SFTBatchConfig = field(default_factory=SFTBatchConfig)
    logging: RunLoggingConfig = field(default_factory=RunLoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    task: TaskConfig | None = None  # only for the held-out evaluation (its test split); null = none
    # held-out evaluation on `task` every logging.eval_every steps; off while limit is 0
    eval: HeldOutConfig = section(
        HeldOutConfig,
        limit=0,
        batch_size=64,
        n_boot=200,  # pass@1's interval in metrics.jsonl (eval/pass1_lo, _hi): the report's headline
        sampling={"max_new_tokens": 256, "seed": None},
    )
    engine: Literal["auto", "hf", "fast"] = "auto"  # generation engine of that evaluation
    steps: int = 0  # optimizer steps; 0 = as many as `epochs` passes over the data take
    epochs: float = 1.0  # passes over the data (when steps = 0)
    seed: int = 0  # data order and held-out sampling
    out: str = "runs/sft"  # the run directory: metrics, checkpoints, config
    resume: bool = False  # continue the run in out= from its latest checkpoint
    # replace the run already in out= (its checkpoints and metrics are deleted first)
    overwrite: bool = False

    def __post_init__(self):
        check(self.steps >= 0, "steps", f"must be >= 0 (0 = from epochs), got {self.steps}")
        check(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        check(
            not (self.eval.enabled and self.task is None),
            "task.name",
            "eval.limit > 0 needs a task to evaluate on, e.g. task.name=arithmetic",
        )
        check(
            self.task is None or self.task.split is None,
            "task.split",
            "the held-out evaluation uses the task's test split; remove task.split",
        )
        check(bool(self.out), "out", "give the run directory, e.g. out=runs/sft")
        check_resume_overwrite(self.resume, self.overwrite)
