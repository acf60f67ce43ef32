"""Supervised fine-tuning: the cold-start and rejection-sampling stages of R1, and distillation into a student.

One optimizer step takes the next `batch_size` examples of a seeded, epoch-wise permutation of the data,
packs them into rows (aha.data.sft: block-diagonal attention, positions restarting per document), and
minimises the token mean of the completion tokens' negative log-likelihood over the whole step:

    L = -(1 / N) * sum_{completion tokens t of the step's examples} log pi(x_t | x_<t of its own document)

with N the number of those tokens. Every micro-batch is divided by the same N, so gradient accumulation gives
exactly the full batch's gradient whatever the split. Prompt tokens, other documents and padding contribute
nothing. Checkpoints, metrics.jsonl, resume and SIGTERM handling are the RL stage's (train/loop.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import torch

from ..algos import agg_loss
from ..algos.logprobs import token_logprobs_entropy
from ..config import ConfigError
from ..data.sft import RowFormat, block_causal_mask, build_examples, collate, pack, read_rows
from ..models.load import unwrap
from . import checkpoint as ckpt
from .batching import group_by_budget
from .dist import Dist
from .guard import SKIP_KEY
from .loop import TrainLoop, held_out_metrics
from .prompts import PromptStream
from .run_dir import check_out_dir
from .sft_config import SFTConfig
from .update import clip_and_step, optimizer_for


def packed_logprobs(model, batch, chunk_size: int | None = None) -> torch.Tensor:
    """logp (R, L-1) of batch.input_ids[:, 1:], each document attending only to itself.

    Flash-attention kernels get the packing from position_ids alone (varlen); the other implementations get
    an explicit (R, 1, L, L) block-diagonal causal mask."""
    base = unwrap(model)
    impl = str(getattr(base.config, "_attn_implementation", "") or "")
    if "flash" in impl:
        mask = None
    else:
        mask = block_causal_mask(batch.segment_ids, dtype=next(base.parameters()).dtype)
    hidden = base.get_decoder()(
        input_ids=batch.input_ids,
        attention_mask=mask,
        position_ids=batch.position_ids,
        use_cache=False,
    ).last_hidden_state  # (R, L, H)
    weight = base.get_output_embeddings().weight  # (V, H)
    logp, _ = token_logprobs_entropy(
        hidden[:, :-1], weight, batch.input_ids[:, 1:], chunk_size=chunk_size, with_entropy=False
    )
    return logp  # (R, L-1)


def split_rows(
    rows: list[list[int]], lengths: list[int], size: int, token_budget: int = 0
) -> list[list[list[int]]]:
    """Packed rows -> micro-batches of <= size rows (and <= token_budget padded tokens when > 0)."""
    row_lengths = [sum(lengths[i] for i in row) for row in rows]
    return [[rows[j] for j in group] for group in group_by_budget(row_lengths, size, token_budget)]


class SFTTrainer(TrainLoop):
    """The SFT step on the shared run machinery (train/loop.py: resume, signals, checkpoints, logging)."""

    name = "sft"
    nonfinite_hint = "lower optim.lr or check the data"

    def __init__(self, cfg: SFTConfig):
        if not cfg.data.path:
            raise ConfigError(
                "data.path", "no SFT data given; set data.path=FILE.jsonl (or a list of files)"
            )
        check_out_dir(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)  # before the model loads
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        d = cfg.data
        rows = [r for src in d.path for r in read_rows(src, d.split, d.config)]  # before the model
        rows = rows[: d.limit] if d.limit else rows
        model, tok = cfg.model.load(seed=cfg.seed, train=True)
        fmt = RowFormat(
            d.prompt_key,
            d.completion_key,
            d.messages_key,
            d.question_key,
            d.template,
            d.system,
            d.prefill,
            d.add_eos,
            d.text_key,
        )
        self.examples, self.data_stats = build_examples(rows, tok, fmt, d.max_length)
        if not self.examples:
            raise ValueError(
                f"no trainable example in {', '.join(d.path)} ({self.data_stats}); check the row "
                "format (prompt/completion, messages or text) and data.max_length"
            )
        # steps=0 means "as many as the epochs take": resolve it once, so config.yaml shows the real number
        cfg = dataclasses.replace(
            cfg,
            steps=cfg.steps
            or max(1, math.ceil(cfg.epochs * len(self.examples) / cfg.batch.batch_size)),
        )
        optimizer, scheduler = optimizer_for(model, cfg.optim, cfg.steps)
        super().__init__(
            cfg,
            dist=Dist(),
            policy=model,
            tokenizer=tok,
            optimizer=optimizer,
            scheduler=scheduler,
            stream=PromptStream(self.examples, cfg.seed),
        )
        self.model, self.device = model, next(model.parameters()).device
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "data_stats.json").write_text(json.dumps(self.data_stats, indent=1))

    def extra_state(self) -> dict:
        return {"stage": "sft"}

    # ---- one step ----------------------------------------------------------------------------------------
    def micro_batches(self, examples) -> list:
        lengths = [len(e) for e in examples]
        rows = pack(lengths, self.cfg.data.max_length, self.cfg.data.packing)
        b = self.cfg.batch
        return [
            collate(examples, chunk, self.tok.pad_token_id)
            for chunk in split_rows(rows, lengths, b.micro_batch_size, b.micro_batch_tokens)
        ]

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        mbs = self.micro_batches(self.stream.take(self.cfg.batch.batch_size))
        n_trained = sum(float(mb.loss_mask.sum()) for mb in mbs)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros(())
        for mb in mbs:
            mb_dev = type(mb)(*(getattr(mb, f).to(self.device) for f in mb.__dataclass_fields__))
            logp = packed_logprobs(self.model, mb_dev)  # (R, L-1)
            loss = agg_loss(-logp, mb_dev.loss_mask, "token-mean", denom=n_trained)
            loss.backward()
            loss_sum += loss.detach().float().cpu()
        lr = self.scheduler.get_last_lr()[0]
        loss_ok = math.isfinite(float(loss_sum))
        grad_norm, stepped = clip_and_step(
            self.model, self.optimizer, self.scheduler, self.cfg.optim.max_grad_norm, ok=loss_ok
        )
        seconds = time.perf_counter() - t0
        n_tokens = sum(mb.n_tokens for mb in mbs)
        slots = sum(mb.input_ids.numel() for mb in mbs)
        skip = {} if stepped else {SKIP_KEY: f"non-finite {'gradient norm' if loss_ok else 'loss'}"}
        return skip | {
            "loss": float(loss_sum),
            "ppl": math.exp(min(float(loss_sum), 50.0)),
            "grad_norm": float(grad_norm),
            "lr": lr,
            "tokens/trained": n_trained,
            "tokens/total": n_tokens,
            "rows": sum(len(mb.input_ids) for mb in mbs),
            "pack_fill": n_tokens / max(slots, 1),
            "micro_batches": len(mbs),
            "epoch": self.stream.position / len(self.examples),
            "time/step": seconds,
            "tokens_per_s": n_tokens / max(seconds, 1e-9),
        }

    def evaluate(self) -> dict:
        """Held-out evaluation on the task's test split (the `eval` section), with a fresh engine."""
        from ..eval import evaluate_task
        from ..rollout.factory import make_engine

        engine = make_engine(self.cfg.engine, self.model, self.tok)
        res = evaluate_task(
            engine, self.tok, self.cfg.task, self.cfg.eval, seed=self.cfg.seed, log=self.print
        )
        return held_out_metrics(res)


def sft(cfg: SFTConfig) -> dict:
    """Run the SFT stage; the summary also names the final checkpoint."""
    trainer = SFTTrainer(cfg)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    return {**summary, "checkpoint": str(ckpt.latest_checkpoint(trainer.out))}
