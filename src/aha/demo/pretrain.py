"""Pretrain the tiny base model: corpus -> tokenizer -> Qwen2 causal LM -> HF-format directory.

Next-token cross-entropy on the synthetic corpus (corpus.py), AdamW, linear warm-up then cosine decay to
`min_lr`. Documents are packed whole into rows of `seq_len` tokens (each row starts at a document start,
the tail is padding left out of the loss), so the model sees documents at position 0 exactly like a prompt
at inference, which carries no leading special token. The output directory loads with
AutoModelForCausalLM / AutoTokenizer.from_pretrained and holds recipe.json (the resolved config, token count,
seconds, device, the mean loss of the last log interval) and metrics.jsonl (the mean loss of each interval of
`log_every` steps).

`aha pretrain configs/pretrain.yaml` reproduces src/aha/assets/tiny-base from its recipe and seed;
configs/pretrain_recheck.yaml makes src/aha/assets/tiny-recheck, configs/pretrain_gpu.yaml the 23M GPU variant.

Why this is not a trainer on aha.train.loop.TrainLoop (the RL and SFT stages' run machinery): that loop is about
a run directory (checkpoints with optimizer state, resume, SIGTERM saves, a metrics line per step), and none of it
applies here: pretraining takes minutes from a random init, so a rerun replaces a resume, and its output is a
Hugging Face directory + recipe.json. Its batch order (torch.randperm over packed rows) is part of the recipe the
shipped models were made with; TrainLoop's PromptStream would draw another one. It logs the mean loss of each
`log_every` interval, so the loop syncs with the device once per interval, not once per step. The gradient
clip and optimizer step are the trainers' (aha.train.update.clip_and_step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..config import check
from ..train.update import clip_and_step
from .corpus import CorpusConfig, build_corpus
from .tokenizer import train_tokenizer


@dataclass
class ModelDims:
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 6
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0

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
    steps: int = 1500
    batch_size: int = 32  # rows of seq_len tokens per step
    seq_len: int = 256
    lr: float = 3e-3
    min_lr: float = 3e-4  # cosine floor
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
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
    vocab_size: int = 1024
    seed: int = 0  # weight init and batch order (the corpus has its own corpus.seed)
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    # autocast compute dtype; master weights stay fp32
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    save_dtype: Literal["float32", "bfloat16"] = "float32"
    threads: int = 0  # torch CPU threads, 0 = torch's default
    compile: bool = False  # torch.compile the model
    log_every: int = 50
    out_dir: str = "runs/pretrain/tiny-base"

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


def pack_rows(
    docs_ids: list[list[int]], seq_len: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy packing of whole documents into rows; returns (ids (R, seq_len), loss_mask (R, seq_len))."""
    rows, masks, cur = [], [], []
    for ids in docs_ids:
        ids = ids[:seq_len]
        if len(cur) + len(ids) > seq_len:
            rows.append(cur + [pad_id] * (seq_len - len(cur)))
            masks.append([1] * len(cur) + [0] * (seq_len - len(cur)))
            cur = []
        cur = cur + ids
    if cur:
        rows.append(cur + [pad_id] * (seq_len - len(cur)))
        masks.append([1] * len(cur) + [0] * (seq_len - len(cur)))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.bool)


def lr_at(step: int, o: OptimSchedule) -> float:
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    frac = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * min(1.0, frac)))


def build_model(cfg: PretrainConfig, vocab_size: int, eos_id: int, pad_id: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    m = cfg.model
    qcfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_kv_heads,
        intermediate_size=m.intermediate_size,
        max_position_embeddings=m.max_position_embeddings,
        rope_theta=m.rope_theta,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(cfg.seed)
    return Qwen2ForCausalLM(qcfg)


def check_reload(out: Path, tok, texts: list[str]) -> None:
    """AutoTokenizer on the saved dir must encode exactly like the tokenizer the model was trained with."""
    from transformers import AutoTokenizer

    from ..data.templates import render_prompt

    loaded = AutoTokenizer.from_pretrained(out)
    texts = texts + [
        render_prompt("Compute 37+5-8")
        + " <think> 37+5-8 = 42-8 = 34 </think> <answer> 34 </answer>"
    ]
    if loaded(texts)["input_ids"] != tok(texts)["input_ids"]:
        raise RuntimeError(
            f"AutoTokenizer.from_pretrained({out}) encodes differently from the trained tokenizer "
            f"({type(loaded).__name__}); align aha.demo.tokenizer with this transformers version"
        )


def pretrain(cfg: PretrainConfig) -> Path:
    """Run the whole recipe; returns the output directory (HF format)."""
    from tqdm.auto import tqdm

    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    docs = build_corpus(cfg.corpus)
    tok = train_tokenizer(docs, cfg.vocab_size)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ids = [d + [eos] for d in tok(docs)["input_ids"]]
    rows, mask = pack_rows(ids, cfg.optim.seq_len, pad)  # (R, T), (R, T)
    n_tokens = int(mask.sum())
    print(
        f"corpus: {len(docs)} docs, {n_tokens} tokens in {len(rows)} rows; vocab {len(tok)}; "
        f"{time.time() - t0:.1f}s",
        flush=True,
    )

    model = build_model(cfg, len(tok), eos, pad).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    o = cfg.optim
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=o.lr,
        betas=(o.beta1, o.beta2),
    )
    fwd = torch.compile(model) if cfg.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

    gen = torch.Generator().manual_seed(cfg.seed)
    order, pos = torch.randperm(len(rows), generator=gen), 0
    log = open(out / "metrics.jsonl", "w")
    model.train()
    bar = tqdm(range(o.steps), desc="pretrain", mininterval=5)
    t_train, seen = time.time(), 0
    loss_sum, n_sum, loss_mean = (
        torch.zeros((), device=device),
        0,
        float("nan"),
    )  # mean since the last log
    for step in bar:
        if pos + o.batch_size > len(order):  # next epoch, reshuffled
            order, pos = torch.randperm(len(rows), generator=gen), 0
        idx = order[pos : pos + o.batch_size]
        pos += o.batch_size
        x, m = rows[idx].to(device), mask[idx].to(device)  # (B, T)
        labels = x.masked_fill(~m, -100)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o)
        with autocast:
            loss = fwd(input_ids=x, labels=labels).loss
        loss.backward()
        clip_and_step(model, opt, max_norm=o.grad_clip)
        opt.zero_grad(set_to_none=True)
        seen += int(m.sum())
        loss_sum += loss.detach()  # no host sync per step; read once per log interval
        n_sum += 1
        if step % cfg.log_every == 0 or step == o.steps - 1:
            loss_mean = loss_sum.item() / n_sum
            loss_sum.zero_()
            n_sum = 0
            rate = seen / (time.time() - t_train)
            bar.set_postfix(loss=f"{loss_mean:.3f}", tok_s=f"{rate:.0f}", refresh=False)
            log.write(
                json.dumps({"step": step, "loss": loss_mean, "lr": lr_at(step, o), "tokens": seen})
                + "\n"
            )
            log.flush()
    log.close()
    train_s = time.time() - t_train

    save_dtype = torch.float32 if cfg.save_dtype == "float32" else torch.bfloat16
    model.to("cpu", dtype=save_dtype).save_pretrained(out)
    tok.save_pretrained(out)
    check_reload(out, tok, docs[:200])
    from transformers import GenerationConfig

    GenerationConfig(
        eos_token_id=eos, pad_token_id=pad, do_sample=True, temperature=1.0
    ).save_pretrained(out)
    recipe = {
        "config": dataclasses.asdict(cfg),
        "params": n_params,
        "corpus_docs": len(docs),
        "corpus_tokens": n_tokens,
        "tokens_seen": seen,
        "epochs": seen / max(1, n_tokens),
        "final_loss": loss_mean,
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - t0, 1),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(
        f"pretrain: {n_params / 1e6:.2f}M params, {seen} tokens, loss {loss_mean:.3f}, "
        f"{train_s:.0f}s training -> {out}",
        flush=True,
    )
    return out
