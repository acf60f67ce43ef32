"""The config of `aha pretrain` (model dimensions, corpus, schedule), apart from the training code so that
`aha pretrain --help` and a config error read it without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check
from .corpus import CorpusConfig


@dataclass
class ModelDims:
    hidden_size: int = 192  # model width
    num_layers: int = 4  # transformer blocks
    num_heads: int = 6  # attention heads (divides hidden_size)
    num_kv_heads: int = 2  # key/value heads (grouped-query attention)
    intermediate_size: int = 512  # MLP width
    max_position_embeddings: int = 512  # the context the model is saved with
    rope_theta: float = 10000.0  # RoPE base

    def __post_init__(self):
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(
            self.hidden_size % self.num_heads == 0,
            "num_heads",
            f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; pick a divisor",
        )
        check(
            self.num_heads % self.num_kv_heads == 0,
            "num_kv_heads",
            f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}; pick a divisor",
        )


@dataclass
class OptimSchedule:
    steps: int = 1500  # optimizer steps
    batch_size: int = 32  # rows of seq_len tokens per step
    seq_len: int = 256  # tokens per row (documents are packed)
    lr: float = 3e-3  # peak learning rate (AdamW, cosine after warmup)
    min_lr: float = 3e-4  # cosine floor
    warmup_steps: int = 100  # linear warmup, in steps
    weight_decay: float = 0.1  # AdamW's decoupled weight decay
    beta1: float = 0.9  # AdamW's beta1
    beta2: float = 0.95  # AdamW's beta2
    grad_clip: float = 1.0  # 0 = off

    def __post_init__(self):
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.seq_len >= 16, "seq_len", f"must be >= 16 tokens, got {self.seq_len}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(
            0 <= self.min_lr <= self.lr,
            "min_lr",
            f"must be in [0, lr={self.lr}], got {self.min_lr}",
        )
        check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta2", "betas must be in [0, 1)")
        check(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")


@dataclass
class PretrainConfig:
    model: ModelDims = field(default_factory=ModelDims)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    optim: OptimSchedule = field(default_factory=OptimSchedule)
    vocab_size: int = 1024  # tokens: 256 bytes + pad + eos + the corpus's most frequent words
    seed: int = 0  # weight init and batch order (the corpus has its own corpus.seed)
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    # autocast compute dtype; master weights stay fp32
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    save_dtype: Literal["float32", "bfloat16"] = "float32"  # dtype of the saved weights
    threads: int = 0  # torch CPU threads, 0 = torch's default
    compile: bool = False  # torch.compile the model
    log_every: int = 50  # a loss line every N steps
    out_dir: str = "runs/pretrain/tiny-base"  # the saved Hugging Face model directory

    def __post_init__(self):
        check(
            self.vocab_size >= 258,
            "vocab_size",
            f"must be >= 258 (256 bytes + 2 specials), got {self.vocab_size}",
        )
        check(self.threads >= 0, "threads", f"must be >= 0 (0 = torch default), got {self.threads}")
        check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        check(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
            "device",
            f"got {self.device!r}; use auto, cpu, cuda or cuda:N",
        )
