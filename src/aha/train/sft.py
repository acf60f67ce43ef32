"""Supervised fine-tuning: the cold-start and rejection-sampling stages of R1, and distillation into a student.

One optimizer step takes the next `batch_size` examples of a seeded, epoch-wise permutation of the data,
packs them into rows (aha.data.sft: block-diagonal attention, positions restarting per document), and
minimises the token mean of the completion tokens' negative log-likelihood over the whole step:

    L = -(1 / N) * sum_{completion tokens t of the step's examples} log pi(x_t | x_<t of its own document)

with N the number of those tokens. Every micro-batch is divided by the same N, so gradient accumulation gives
exactly the full batch's gradient whatever the split. Prompt tokens, other documents and padding contribute
nothing. Checkpoints, metrics.jsonl, resume and SIGTERM handling are the RL stage's (train/checkpoint.py).
"""
from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ..algos import agg_loss
from ..algos.logprobs import token_logprobs_entropy
from ..config import ConfigError, to_dict
from ..data.sft import RowFormat, block_causal_mask, build_examples, collate, pack, read_rows
from ..models.load import load_model, unwrap
from . import checkpoint as ckpt
from .metrics import MetricsLog, console_line
from .optim import build_optimizer, build_scheduler
from .prompts import PromptStream
from .sft_config import SFTConfig


def packed_logprobs(model, batch, chunk_size: int = 1024) -> torch.Tensor:
    """logp (R, L-1) of batch.input_ids[:, 1:], each document attending only to itself.

    Flash-attention kernels get the packing from position_ids alone (varlen); the other implementations get
    an explicit (R, 1, L, L) block-diagonal causal mask."""
    base = unwrap(model)
    impl = str(getattr(base.config, "_attn_implementation", "") or "")
    if "flash" in impl:
        mask = None
    else:
        mask = block_causal_mask(batch.segment_ids, dtype=next(base.parameters()).dtype)
    hidden = base.get_decoder()(input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids,
                                use_cache=False).last_hidden_state             # (R, L, H)
    weight = base.get_output_embeddings().weight                            # (V, H)
    logp, _ = token_logprobs_entropy(hidden[:, :-1], weight, batch.input_ids[:, 1:], chunk_size=chunk_size,
                                     with_entropy=False)
    return logp                                                              # (R, L-1)


def split_rows(rows: list[list[int]], lengths: list[int], size: int, token_budget: int = 0) -> list[list[list[int]]]:
    """Packed rows -> micro-batches of <= size rows (and <= token_budget padded tokens when > 0)."""
    out, cur, cur_max = [], [], 0
    for row in rows:
        n = sum(lengths[i] for i in row)
        new_max = max(cur_max, n)
        if cur and (len(cur) == size or (token_budget and new_max * (len(cur) + 1) > token_budget)):
            out.append(cur)
            cur, new_max = [], n
        cur.append(row)
        cur_max = new_max
    return out + ([cur] if cur else [])


class SFTTrainer:
    def __init__(self, cfg: SFTConfig):
        if not cfg.data.path:
            raise ConfigError("data.path", "no SFT data given; set data.path=FILE.jsonl (or a list of files)")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        m, d = cfg.model, cfg.data
        self.model, self.tok = load_model(m.path, device=m.device, dtype=m.dtype, seed=cfg.seed,
                                          gradient_checkpointing=m.gradient_checkpointing, lora_r=m.lora.r,
                                          lora_alpha=m.lora.alpha, lora_dropout=m.lora.dropout,
                                          lora_target_modules=m.lora.target_modules,
                                          trust_remote_code=m.trust_remote_code)
        self.device = next(self.model.parameters()).device
        rows = [r for src in d.path for r in read_rows(src, d.split)]
        rows = rows[:d.limit] if d.limit else rows
        fmt = RowFormat(d.prompt_key, d.completion_key, d.messages_key, d.question_key, d.template, d.system,
                        d.prefill, d.add_eos)
        self.examples, self.data_stats = build_examples(rows, self.tok, fmt, d.max_length)
        if not self.examples:
            raise ValueError(f"no trainable example in {', '.join(d.path)} ({self.data_stats}); check the row "
                             "format (prompt/completion or messages) and data.max_length")
        self.stream = PromptStream(self.examples, cfg.seed)
        self.steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(self.examples) / cfg.batch.batch_size))
        self.optimizer = build_optimizer(self.model, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas,
                                         cfg.optim.eps)
        self.scheduler = build_scheduler(self.optimizer, total=self.steps, warmup=cfg.optim.warmup_steps,
                                         schedule=cfg.optim.schedule, min_ratio=cfg.optim.min_lr_ratio)
        lg = cfg.logging
        self.log = MetricsLog(self.out, tensorboard=lg.tensorboard, wandb=lg.wandb, wandb_project=lg.wandb_project,
                              config=to_dict(cfg))
        self.step = 0
        self.stop_requested = False

    # ---- one step ----------------------------------------------------------------------------------------
    def micro_batches(self, examples) -> list:
        lengths = [len(e) for e in examples]
        rows = pack(lengths, self.cfg.data.max_length, self.cfg.data.packing)
        b = self.cfg.batch
        return [collate(examples, chunk, self.tok.pad_token_id)
                for chunk in split_rows(rows, lengths, b.micro_batch_size, b.micro_batch_tokens)]

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        mbs = self.micro_batches(self.stream.take(self.cfg.batch.batch_size))
        n_trained = sum(float(mb.loss_mask.sum()) for mb in mbs)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros(())
        for mb in mbs:
            mb_dev = type(mb)(*(getattr(mb, f).to(self.device) for f in mb.__dataclass_fields__))
            logp = packed_logprobs(self.model, mb_dev)                      # (R, L-1)
            loss = agg_loss(-logp, mb_dev.loss_mask, "token-mean", denom=n_trained)
            loss.backward()
            loss_sum += loss.detach().float().cpu()
        if self.cfg.optim.max_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.max_grad_norm)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        seconds = time.perf_counter() - t0
        n_tokens = sum(mb.n_tokens for mb in mbs)
        slots = sum(mb.input_ids.numel() for mb in mbs)
        return {"loss": float(loss_sum), "ppl": math.exp(min(float(loss_sum), 50.0)), "grad_norm": float(grad_norm),
                "lr": lr, "tokens/trained": n_trained, "tokens/total": n_tokens, "rows": sum(len(mb.input_ids) for mb in mbs),
                "pack_fill": n_tokens / max(slots, 1), "micro_batches": len(mbs),
                "epoch": self.stream.position / len(self.examples), "time/step": seconds,
                "tokens_per_s": n_tokens / max(seconds, 1e-9)}

    def evaluate(self) -> dict:
        from ..data import get_task
        from ..eval import eval_metrics
        from ..rollout.factory import make_engine

        lg, t = self.cfg.logging, self.cfg.task
        test = get_task(t.name, **t.options).dataset("test")
        rows = [test[i] for i in range(min(lg.eval_size, len(test)))]
        return eval_metrics(make_engine(self.cfg.engine, self.model, self.tok), self.tok, rows,
                            accuracy=get_task(t.name, **t.options).accuracy_reward, k=lg.eval_k,
                            template=t.template, system=t.system, prefill=t.prefill, seed=self.cfg.seed,
                            max_tokens=lg.eval_max_new_tokens, temperature=lg.eval_temperature,
                            top_p=lg.eval_top_p, batch_size=lg.eval_batch)

    # ---- the run -----------------------------------------------------------------------------------------
    def save(self, step: int, *, rng: dict | None = None, data_position: int | None = None) -> Path:
        pos = self.stream.position if data_position is None else data_position
        return ckpt.save_checkpoint(self.out, step, model=self.model, tokenizer=self.tok, optimizer=self.optimizer,
                                    scheduler=self.scheduler, keep_last=self.cfg.checkpoint.keep_last, rng=rng,
                                    extra={"data_position": pos, "stage": "sft"})

    def maybe_resume(self) -> None:
        last = ckpt.latest_checkpoint(self.out) if self.cfg.resume else None
        if self.cfg.resume and last is None:
            print(f"resume=true but {self.out}/checkpoints holds no checkpoint: starting from step 0")
        if last is None:
            return
        state = ckpt.load_checkpoint(last, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        self.step, self.stream.position = state["step"], state["data_position"]
        self.log.truncate_after(self.step)
        print(f"resumed from {last} (step {self.step})")

    def _on_signal(self, signum, frame):
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step, saving a checkpoint, then exiting")

    def fit(self) -> dict:
        cfg = self.cfg
        (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        (self.out / "data_stats.json").write_text(json.dumps(self.data_stats, indent=1))
        self.maybe_resume()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        from tqdm import tqdm
        bar = tqdm(total=self.steps, initial=self.step, disable=not cfg.logging.progress, desc="sft", leave=False)
        saved_step, step_start, t_start = self.step, None, time.perf_counter()
        try:
            while self.step < self.steps and not self.stop_requested:
                step_start = (ckpt.rng_state(), self.stream.position)   # what a checkpoint needs if this step dies
                metrics = self.train_step(self.step + 1)
                step_start = None
                self.step += 1
                lg = cfg.logging
                if lg.eval_size and ((lg.eval_every and self.step % lg.eval_every == 0) or self.step == self.steps):
                    metrics.update(self.evaluate())
                self.log.log(metrics, self.step)
                bar.update(1)
                if lg.log_every and self.step % lg.log_every == 0:
                    bar.write(console_line(self.step, self.steps, metrics) + f" | loss {metrics['loss']:.4f}")
                if cfg.checkpoint.save_every and self.step % cfg.checkpoint.save_every == 0:
                    self.save(self.step)
                    saved_step = self.step
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
            if self.step != saved_step or (self.step and ckpt.latest_checkpoint(self.out) is None):
                rng, pos = step_start if step_start is not None else (None, None)
                print(f"saved {self.save(self.step, rng=rng, data_position=pos)}")
        return {"steps": self.step, "seconds": time.perf_counter() - t_start, "stopped_early": self.stop_requested,
                "checkpoint": str(ckpt.latest_checkpoint(self.out))}

    def close(self) -> None:
        self.log.close()


def sft(cfg: SFTConfig) -> dict:
    trainer = SFTTrainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def cmd_sft(args: list[str]) -> int:
    """`aha sft CONFIG [key.sub=value ...]`."""
    from ..cli import split_args
    from ..config import load_config

    path, overrides = split_args(args)
    cfg = load_config(SFTConfig, path, overrides)
    summary = sft(cfg)
    print(f"done: {summary['steps']} SFT steps in {summary['seconds']:.1f}s; model {summary['checkpoint']}")
    return 0
