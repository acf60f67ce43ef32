"""Typed config of the RL stage (GRPO / Dr. GRPO / DAPO / PPO). One source of truth per knob.

A YAML recipe sets any subset of these; everything else keeps the defaults below, which describe a small
R1-Zero run. `aha train CONFIG key.sub=value ...` overrides single keys. The model, task, sampling and held-out
evaluation sections are the classes every command shares (aha.schema); values that depend on others (the
estimator's std_scale, the policy loss's clip range, Dr. GRPO's norm_len, the evaluation's max_new_tokens) are
resolved here, so the run's config.yaml shows the values used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..config import ConfigError, check, section
from ..schema import HeldOutConfig, LoraConfig, ModelConfig, SamplingConfig, TaskConfig
from .algorithm import AlgorithmConfig
from .memory import OPTIMIZERS, MemoryConfig

__all__ = [
    "TrainConfig",
    "ModelConfig",
    "LoraConfig",
    "TaskConfig",
    "RewardsConfig",
    "RewardItem",
    "RLSamplingConfig",
    "AlgorithmConfig",
    "OptimConfig",
    "BatchConfig",
    "LoggingConfig",
    "RunLoggingConfig",
    "CheckpointConfig",
    "HeldOutConfig",
    "SamplingConfig",
]


@dataclass
class RewardItem:
    # accuracy (the task's verifier) | format | tag | language | code | ... | module:function
    name: str = "accuracy"
    weight: float = 1.0  # its weight in the summed reward
    # fixed options of the function, e.g. {lang: zh} (language), {min_think_chars: 8} (format), {allow_unsafe:
    # true} (code); a row's own field of the same name wins
    kwargs: dict = field(default_factory=dict)
    # a 'module:function' reward's completions per call, spread over the reward workers; 0 = all of the
    # step's in one call, as TRL's trainer calls it (a batch statistic such as open-r1's len_reward is then over
    # the same completions as in TRL)
    chunk: int = 8

    def __post_init__(self):
        check(self.chunk >= 0, "chunk", f"must be >= 1, or 0 for the whole batch; got {self.chunk}")


@dataclass
class RewardsConfig:
    # the reward functions; a completion's reward is their weighted sum
    funcs: list[RewardItem] = field(
        default_factory=lambda: [RewardItem("accuracy", 1.0), RewardItem("format", 0.5)]
    )
    timeout: float = 5.0  # seconds per completion for expensive verifiers
    num_workers: int = 2  # processes that score completions in parallel

    def __post_init__(self):
        check(
            len(self.funcs) > 0,
            "funcs",
            "at least one reward function is needed, e.g. [{name: accuracy}]",
        )
        check(self.timeout > 0, "timeout", f"must be > 0 seconds, got {self.timeout}")
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")


@dataclass
class RLSamplingConfig(SamplingConfig):
    """The shared SamplingConfig plus the RL group: G completions of every prompt."""

    group_size: int = 8  # G completions per prompt
    # seed each prompt by its index: samples independent of batching and of the number of processes
    seed_per_prompt: bool = False

    def __post_init__(self):
        super().__post_init__()
        check(
            self.temperature > 0,
            "temperature",
            f"RL sampling needs temperature > 0, got {self.temperature}",
        )
        check(self.max_new_tokens is not None, "max_new_tokens", "must be >= 1, got null")
        check(self.group_size >= 1, "group_size", f"must be >= 1, got {self.group_size}")


@dataclass
class OptimConfig:
    lr: float = 1e-6  # peak learning rate (after warmup)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW's (beta1, beta2)
    eps: float = 1e-8  # AdamW's epsilon
    schedule: Literal["constant", "cosine"] = "constant"  # learning rate after warmup
    warmup_steps: int = 0  # linear warmup from 0 to lr, in optimizer steps
    min_lr_ratio: float = 0.0  # cosine ends at lr * min_lr_ratio
    max_grad_norm: float = 1.0  # 0 = no clipping
    name: str = "adamw"  # adamw | adamw_8bit (torchao) | adamw_cpu_offload (train/optim.py)
    # a step with a non-finite loss / gradient norm / advantages is skipped; this many in a row stop the run
    max_skipped_steps: int = 3

    def __post_init__(self):
        check(
            self.max_skipped_steps >= 1,
            "max_skipped_steps",
            f"must be >= 1 (1 = stop at the first non-finite step), got {self.max_skipped_steps}",
        )
        check(
            self.lr > 0, "lr", f"learning rate must be > 0, got {self.lr} (e.g. 1e-6 for 1B models)"
        )
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(
            0 <= self.min_lr_ratio <= 1,
            "min_lr_ratio",
            f"must be in [0, 1], got {self.min_lr_ratio}",
        )
        check(
            self.max_grad_norm >= 0,
            "max_grad_norm",
            f"must be >= 0 (0 = off), got {self.max_grad_norm}",
        )
        check(
            self.name in OPTIMIZERS,
            "name",
            f"unknown optimizer {self.name!r}; choose one of: {', '.join(OPTIMIZERS)}",
        )
        from importlib.util import find_spec

        check(
            self.name != "adamw_8bit" or find_spec("torchao") is not None,
            "name",
            "adamw_8bit needs torchao: pip install 'aha-rl[optim]'",
        )


@dataclass
class BatchConfig:
    # distinct prompts per RL step; the batch is prompts_per_step * G sequences
    prompts_per_step: int = 8
    # sequences per forward/backward; must divide prompts_per_step * G (a larger one is that product)
    micro_batch_size: int = 16
    # > 0: also split micro-batches so padded tokens stay under this budget; 0: none; null: the memory plan's
    micro_batch_tokens: int | None = None
    # Training forward: compute each distinct prompt of a micro-batch once and its completions against its KV cache
    # (same logprobs and gradients up to float rounding; off under gradient checkpointing). false = plain forward.
    share_prefix: bool = True

    def __post_init__(self):
        check(
            self.prompts_per_step >= 1,
            "prompts_per_step",
            f"must be >= 1, got {self.prompts_per_step}",
        )
        check(
            self.micro_batch_size >= 1,
            "micro_batch_size",
            f"must be >= 1, got {self.micro_batch_size}",
        )
        check(
            self.micro_batch_tokens is None or self.micro_batch_tokens >= 0,
            "micro_batch_tokens",
            "must be >= 0 (0 = no token budget, null = the memory plan's)",
        )


@dataclass
class RunLoggingConfig:
    """What every training loop logs (RL and SFT): metric lines, the evaluation cadence, sinks."""

    log_every: int = 1  # a metrics line (console, metrics.jsonl) every N steps
    # held-out evaluation (the `eval` section) every N steps, and at the last step
    eval_every: int = 0
    tensorboard: bool = False  # also write OUT/tensorboard (the tensorboard extra)
    wandb: bool = False  # also log to Weights & Biases (the wandb extra); resumes its run
    wandb_project: str = "aha"  # the W&B project (the run is named after out=)
    progress: bool = True  # tqdm bar

    def __post_init__(self):
        for key in ("log_every", "eval_every"):
            check(getattr(self, key) >= 0, key, f"must be >= 0 (0 = off), got {getattr(self, key)}")


@dataclass
class LoggingConfig(RunLoggingConfig):
    samples_every: int = 10  # print and store a table of sample completions every N steps (0 = off)

    def __post_init__(self):
        super().__post_init__()
        check(
            self.samples_every >= 0,
            "samples_every",
            f"must be >= 0 (0 = off), got {self.samples_every}",
        )


# The held-out evaluation's keys used to live under `logging` (renamed when it became the shared section).
EVAL_RENAMED = {
    "logging.eval_size": "eval.limit",
    "logging.eval_k": "eval.k",
    "logging.eval_temperature": "eval.sampling.temperature",
    "logging.eval_top_p": "eval.sampling.top_p",
    "logging.eval_batch": "eval.batch_size",
}


@dataclass
class CheckpointConfig:
    save_every: int = 50  # steps; 0 = only at the end (and on SIGTERM / Ctrl-C)
    keep_last: int = 2  # checkpoints kept in OUT/checkpoints; older ones are deleted
    save_optimizer: bool = (
        True  # false: weights only (no AdamW state; resuming restarts its moments)
    )

    def __post_init__(self):
        check(self.save_every >= 0, "save_every", "must be >= 0 (0 = only at the end)")
        check(
            self.keep_last >= 1,
            "keep_last",
            f"must keep at least 1 checkpoint, got {self.keep_last}",
        )


def check_resume_overwrite(resume: bool, overwrite: bool) -> None:
    """resume=true continues the run in out=, overwrite=true replaces it: not both."""
    check(
        not (resume and overwrite),
        "overwrite",
        "resume=true continues the run in out= and overwrite=true deletes it; choose one",
    )


@dataclass
class TrainConfig:
    RENAMED: ClassVar[dict[str, str]] = EVAL_RENAMED

    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    sampling: RLSamplingConfig = field(default_factory=RLSamplingConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # held-out evaluation on the task's test split every logging.eval_every steps; off while limit is 0.
    # sampling.max_new_tokens null = the rollouts' sampling.max_new_tokens; seed null = the run's seed
    eval: HeldOutConfig = section(
        HeldOutConfig,
        limit=0,
        batch_size=64,
        n_boot=200,  # pass@1's interval in metrics.jsonl (eval/pass1_lo, _hi): the report's headline
        sampling={"max_new_tokens": None, "seed": None},
    )
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    engine: Literal["auto", "hf", "fast"] = "auto"  # auto: fast engine on GPU, HF generate on CPU
    # The fast engine's KV cache: auto (the model's dtype) or fp8 (float8 e4m3 + a scale per token and head:
    # half the memory, no faster; samples from a slightly perturbed policy; the fast engine on a GPU of
    # compute capability 8.9+ or on the CPU)
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    # The fast engine's decode weights: auto (the model's) or fp8 (float8 e4m3 copies of q/k/v, gate/up and down,
    # per-row activations: faster decode GEMMs, a policy further from the trainer's, so pair it with
    # algorithm.rollout_is; the fast engine on a GPU of compute capability 8.9+ or on the CPU; no LoRA)
    engine_weights_dtype: Literal["auto", "fp8"] = "auto"
    # Free the fast engine's KV cache and CUDA graphs before each update: less memory in the update, a new
    # allocation and graph capture every step. null: the memory plan decides (off without one).
    engine_release: bool | None = None
    steps: int = 100  # RL steps, each batch.prompts_per_step prompts x sampling.group_size
    seed: int = 0  # sampling, prompt order and initialisation
    out: str = "runs/train"  # the run directory: metrics, checkpoints, config, samples
    resume: bool = False  # continue the run in out= from its latest checkpoint
    # replace the run already in out= (its checkpoints and metrics are deleted first)
    overwrite: bool = False

    def __post_init__(self):
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(
            self.kv_cache_dtype == "auto" or self.engine != "hf",
            "kv_cache_dtype",
            f"{self.kv_cache_dtype} is a fast-engine setting and engine=hf: set engine=fast (or auto on a GPU)",
        )
        check(
            self.engine_weights_dtype == "auto" or self.engine != "hf",
            "engine_weights_dtype",
            f"{self.engine_weights_dtype} is a fast-engine setting and engine=hf: set engine=fast (or auto on "
            "a GPU)",
        )
        check(
            self.engine_weights_dtype == "auto" or self.model.lora.r == 0,
            "engine_weights_dtype",
            "fp8 copies plain projections and model.lora.r > 0 wraps them in adapters: set "
            "engine_weights_dtype=auto (or train without LoRA)",
        )
        G, P, M = self.sampling.group_size, self.batch.prompts_per_step, self.batch.micro_batch_size
        if self.algorithm.name == "grpo":
            check(
                G >= 2,
                "sampling.group_size",
                f"GRPO needs >= 2 samples per prompt for a group baseline, got {G}; "
                "set e.g. sampling.group_size=8",
            )
        if (
            M > P * G
        ):  # a micro-batch larger than the step's batch is the whole batch (small test runs)
            M = self.batch.micro_batch_size = P * G
        check(
            (P * G) % M == 0,
            "batch.micro_batch_size",
            f"{P} prompts x {G} samples = {P * G} sequences do not split into micro-batches of {M}; "
            f"use a divisor of {P * G}",
        )
        check(
            self.task.split is None,
            "task.split",
            "training draws rollouts from the train split and evaluates on test; remove task.split",
        )
        if self.algorithm.agg == "seq-mean-token-sum-norm" and self.algorithm.norm_len is None:
            self.algorithm.norm_len = self.sampling.max_new_tokens
        if self.eval.sampling.max_new_tokens is None:
            self.eval.sampling.max_new_tokens = self.sampling.max_new_tokens
        if (
            not self.eval.sampling.stop
        ):  # the held-out evaluation stops where training's samples stop
            self.eval.sampling.stop = list(self.sampling.stop)
            self.eval.sampling.include_stop_str_in_output = self.sampling.include_stop_str_in_output
        if self.resume and not self.out:
            raise ConfigError(
                "out", "resume=true needs the run directory to resume from in out=..."
            )
        check_resume_overwrite(self.resume, self.overwrite)
