"""Typed config of the SFT stage (`aha sft CONFIG key.sub=value ...`). Model, optimizer and checkpoint
sections are the RL stage's own classes, so a recipe's blocks paste between stages unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check
from .config import CheckpointConfig, ModelConfig, OptimConfig, RunLoggingConfig, TaskConfig


@dataclass
class SFTDataConfig:
    path: list[str] = field(
        default_factory=list
    )  # .jsonl/.json/.parquet files, dataset dirs or hf:NAME[:SPLIT]
    split: str = "train"  # for dataset dirs / hf: sources
    prompt_key: str = "prompt"
    completion_key: str = "completion"
    messages_key: str = "messages"  # chat-format rows
    question_key: str = "question"
    template: str | None = (
        None  # set (r1-zero | chat | plain | "...{prompt}..."): the prompt is rendered from
    )
    # row[question_key], exactly as the RL stage renders its prompts
    system: str | None = None
    prefill: str = ""  # e.g. "<think>": then completions start after it
    max_length: int = 1024  # tokens per example (longer ones are cut) and per packed row
    packing: bool = True  # several documents per row, no attention across them
    add_eos: bool = (
        True  # append eos to prompt/completion rows (chat templates end turns themselves)
    )
    limit: int | None = None  # use the first N rows only

    def __post_init__(self):
        check(self.max_length >= 2, "max_length", f"must be >= 2 tokens, got {self.max_length}")
        check(
            self.limit is None or self.limit >= 1,
            "limit",
            f"must be >= 1 or null, got {self.limit}",
        )


@dataclass
class SFTOptimConfig(OptimConfig):
    # SFT defaults; a subclass (not a default_factory) so that they also hold when a YAML sets other keys
    lr: float = 1e-5
    schedule: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: float = 0.1


@dataclass
class SFTTaskConfig(TaskConfig):
    name: str = ""  # only for held-out evaluation during SFT; "" = none


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
class SFTLoggingConfig(RunLoggingConfig):
    eval_max_new_tokens: int = 256  # held-out evaluation on `task` (its test split) during SFT


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    batch: SFTBatchConfig = field(default_factory=SFTBatchConfig)
    logging: SFTLoggingConfig = field(default_factory=SFTLoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    task: SFTTaskConfig = field(default_factory=SFTTaskConfig)
    engine: Literal["auto", "hf", "fast"] = "auto"  # generation engine of that evaluation
    steps: int = 0  # optimizer steps; 0 = as many as `epochs` passes over the data take
    epochs: float = 1.0
    seed: int = 0
    out: str = "runs/sft"
    resume: bool = False

    def __post_init__(self):
        check(self.steps >= 0, "steps", f"must be >= 0 (0 = from epochs), got {self.steps}")
        check(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        check(
            not (self.logging.eval_size and not self.task.name),
            "task.name",
            "logging.eval_size > 0 needs a task to evaluate on, e.g. task.name=arithmetic",
        )
        check(bool(self.out), "out", "give the run directory, e.g. out=runs/sft")
