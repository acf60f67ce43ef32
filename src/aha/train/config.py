"""Typed config of the RL stage (GRPO / Dr. GRPO / DAPO; PPO shares it). One source of truth per knob.

A YAML recipe sets any subset of these; everything else keeps the defaults below, which describe a small
R1-Zero run. `aha train CONFIG key.sub=value ...` overrides single keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import ConfigError, check


@dataclass
class LoraConfig:
    r: int = 0  # 0 = full fine-tuning
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    def __post_init__(self):
        check(self.r >= 0, "r", f"LoRA rank must be >= 0 (0 turns LoRA off), got {self.r}")


@dataclass
class ModelConfig:
    path: str = (
        "tiny-base"  # local dir or hub id; "tiny-base" / "tiny-recheck" = models shipped with aha;
    )
    # "tiny-random" = a random 2-layer Qwen2 on a character tokenizer (tests)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = (
        "auto"  # auto: bf16 on GPU, fp32 on CPU
    )
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    trust_remote_code: bool = False


@dataclass
class TaskConfig:
    name: str = "countdown"  # a registered task (aha.data) or a file task (gsm8k, math, jsonl, ...)
    options: dict = field(
        default_factory=dict
    )  # passed to the task, e.g. {path: data.jsonl, question: q}
    template: str = "r1-zero"  # r1-zero | chat | plain | a custom string containing {prompt}
    system: str | None = None  # system prompt for template=chat
    prefill: str = ""  # assistant prefill, e.g. "<think>"


@dataclass
class RewardItem:
    name: str = (
        "accuracy"  # accuracy (the task's verifier) | format | tag | language | ... | module:fn
    )
    weight: float = 1.0


@dataclass
class RewardsConfig:
    funcs: list[RewardItem] = field(
        default_factory=lambda: [RewardItem("accuracy", 1.0), RewardItem("format", 0.5)]
    )
    timeout: float = 5.0  # seconds per completion for expensive verifiers
    num_workers: int = 2

    def __post_init__(self):
        check(
            len(self.funcs) > 0,
            "funcs",
            "at least one reward function is needed, e.g. [{name: accuracy}]",
        )
        check(self.timeout > 0, "timeout", f"must be > 0 seconds, got {self.timeout}")
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")


@dataclass
class SamplingConfig:
    group_size: int = 8  # G completions per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed_per_prompt: bool = (
        False  # seed each prompt by its index: samples independent of batching / #ranks
    )

    def __post_init__(self):
        check(
            self.temperature > 0,
            "temperature",
            f"RL sampling needs temperature > 0, got {self.temperature}",
        )
        check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        check(self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        check(
            self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}"
        )


@dataclass
class AlgorithmConfig:
    name: Literal["grpo", "ppo"] = "grpo"
    advantage: str | None = (
        None  # grpo | dr_grpo | rloo | remax | reinforce++ | gae; null: grpo, or gae for ppo
    )
    std_scale: Literal["group", "batch", "none"] = "group"
    agg: str = "seq-mean-token-mean"  # token-mean (DAPO) | seq-mean-token-sum-norm (Dr. GRPO)
    norm_len: int | None = (
        None  # Dr. GRPO's constant normaliser; defaults to sampling.max_new_tokens
    )
    policy_loss: str = (
        "ppo_clip"  # ppo_clip (per-token ratio) | gspo (sequence-level ratio; its paper clips
    )
    # at clip_low 3e-4, clip_high 4e-4)
    clip_low: float = 0.2
    clip_high: float = 0.2  # DAPO clip-higher: 0.28
    clip_c: float | None = None  # dual clip for negative advantages (e.g. 3.0)
    beta: float = 0.0  # KL(pi || pi_ref) weight in the loss; > 0 loads a reference model
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    mu: int = 1  # policy updates per batch; 1 = on-policy (ratio 1, no extra forward)
    entropy_coef: float = 0.0
    dynamic_sampling: bool = (
        False  # DAPO: drop groups whose rewards are all equal, resample to fill
    )
    max_resample_rounds: int = (
        3  # bound on the extra generate calls dynamic sampling may make per step
    )
    mask_truncated: bool = False  # DAPO: truncated completions contribute no loss
    overlong_penalty: bool = False  # DAPO soft overlong punishment (eq. 13), added to the reward
    overlong_cache: int = 64  # L_cache of eq. 13, in tokens
    # PPO only (algorithm.name=ppo; validated by aha.train.ppo.PPOSettings)
    gamma: float = 1.0  # discount
    lam: float = 1.0  # GAE lambda (0.95 failed on the demo task: benchmarks/grpo_vs_ppo.py)
    whiten_advantages: bool = True
    value_clip: float | None = 0.2  # clipped value loss; null = plain squared error
    value_lr: float | None = None  # critic learning rate; null = optim.lr
    value_model_path: str | None = None  # critic initialisation; null = model.path
    reward_kl_coef: float = 0.0  # k1 KL to the reference in the reward (classic RLHF); 0 = off
    kl_ctrl: Literal["fixed", "adaptive"] = "fixed"
    kl_target: float | None = None  # adaptive: target per-sequence KL
    kl_horizon: float = 10000.0  # adaptive: horizon in samples

    def __post_init__(self):
        check(
            self.clip_low >= 0 and self.clip_high >= 0,
            "clip_low",
            "clip_low and clip_high must be >= 0 (the paper uses 0.2)",
        )
        check(
            self.clip_c is None or self.clip_c > 1,
            "clip_c",
            f"dual clip must be > 1 (e.g. 3.0), got {self.clip_c}",
        )
        check(self.beta >= 0, "beta", f"the KL weight must be >= 0, got {self.beta}")
        check(self.mu >= 1, "mu", f"policy updates per batch must be >= 1, got {self.mu}")
        check(self.max_resample_rounds >= 0, "max_resample_rounds", "must be >= 0")
        check(self.overlong_cache >= 1, "overlong_cache", "must be >= 1 token")
        from ..algos import ADVANTAGES, AGGS, POLICY_LOSSES

        check(
            self.policy_loss in POLICY_LOSSES,
            "policy_loss",
            f"unknown policy loss {self.policy_loss!r}; choose one of: {', '.join(POLICY_LOSSES)}",
        )
        if self.advantage is None:
            self.advantage = "gae" if self.name == "ppo" else "grpo"
        outcome = [
            n for n in ADVANTAGES if n != "gae"
        ]  # gae needs a value model: algorithm.name=ppo
        check(
            self.advantage in outcome or (self.name == "ppo" and self.advantage == "gae"),
            "advantage",
            f"unknown estimator {self.advantage!r}; choose one of: {', '.join(outcome)} (gae with name=ppo)",
        )
        check(
            self.agg in AGGS,
            "agg",
            f"unknown aggregation {self.agg!r}; choose one of: {', '.join(AGGS)}",
        )


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine ends at lr * min_lr_ratio
    max_grad_norm: float = 1.0  # 0 = no clipping

    def __post_init__(self):
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


@dataclass
class BatchConfig:
    prompts_per_step: int = (
        8  # distinct prompts per RL step; the batch is prompts_per_step * G sequences
    )
    micro_batch_size: int = 16  # sequences per forward/backward; must divide prompts_per_step * G
    micro_batch_tokens: int = (
        0  # > 0: also split micro-batches so padded tokens stay under this budget
    )
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
            self.micro_batch_tokens >= 0, "micro_batch_tokens", "must be >= 0 (0 = no token budget)"
        )


@dataclass
class RunLoggingConfig:
    """What every training loop logs (RL and SFT): metric lines, held-out evaluation, sinks."""

    log_every: int = 1
    eval_every: int = 0  # held-out evaluation every N steps (it also runs at the last step)
    eval_size: int = 0  # held-out problems for that evaluation
    eval_k: int = 4  # samples per held-out problem
    eval_temperature: float = 0.6  # the R1 paper's evaluation sampling
    eval_top_p: float = 0.95
    eval_batch: int = 64  # problems per generate call
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "aha"
    progress: bool = True  # tqdm bar

    def __post_init__(self):
        for key in ("log_every", "eval_every", "eval_size"):
            check(getattr(self, key) >= 0, key, f"must be >= 0 (0 = off), got {getattr(self, key)}")
        check(self.eval_k >= 1, "eval_k", f"must be >= 1, got {self.eval_k}")
        check(self.eval_batch >= 1, "eval_batch", f"must be >= 1, got {self.eval_batch}")


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


@dataclass
class CheckpointConfig:
    save_every: int = 50  # steps; 0 = only at the end (and on SIGTERM / Ctrl-C)
    keep_last: int = 2

    def __post_init__(self):
        check(self.save_every >= 0, "save_every", "must be >= 0 (0 = only at the end)")
        check(
            self.keep_last >= 1,
            "keep_last",
            f"must keep at least 1 checkpoint, got {self.keep_last}",
        )


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    engine: Literal["auto", "hf", "fast"] = "auto"  # auto: fast engine on GPU, HF generate on CPU
    engine_release: bool = (
        False  # free the fast engine's KV cache and CUDA graphs before each update: less
    )
    # memory in the update, a new allocation and graph capture every step
    steps: int = 100
    seed: int = 0
    out: str = "runs/train"
    resume: bool = False

    def __post_init__(self):
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        G, P, M = self.sampling.group_size, self.batch.prompts_per_step, self.batch.micro_batch_size
        if self.algorithm.name == "grpo":
            check(
                G >= 2,
                "sampling.group_size",
                f"GRPO needs >= 2 samples per prompt for a group baseline, got {G}; set e.g. sampling.group_size=8",
            )
        check(
            (P * G) % M == 0,
            "batch.micro_batch_size",
            f"{P} prompts x {G} samples = {P * G} sequences do not split into micro-batches of {M}; "
            f"use a divisor of {P * G}",
        )
        if self.algorithm.agg == "seq-mean-token-sum-norm" and self.algorithm.norm_len is None:
            self.algorithm.norm_len = self.sampling.max_new_tokens
        if self.resume and not self.out:
            raise ConfigError(
                "out", "resume=true needs the run directory to resume from in out=..."
            )
