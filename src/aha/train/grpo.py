"""The RL loop of R1-Zero: GRPO (and its Dr. GRPO / DAPO variants) on rule-based rewards.

One step (DeepSeekMath eq. 21 / R1 eq. 1):
    prompts q_1..q_P  --engine-->  G completions o_i each (temperature T)  --rewards-->  r_i
    A_i = (r_i - mean_g(r)) / (std_g(r) + eps)                             (aha.algos.advantages)
    L = agg_t[ -min(rho_t A_i, clip(rho_t, 1-e_low, 1+e_high) A_i) ] + beta * agg_t[KL_k3(pi || pi_ref)]
    with rho_t = pi(o_t) / pi_old(o_t); mu = 1 makes pi_old = pi (ratio 1), mu > 1 reuses the batch mu times.
Departures from the paper, all configurable: the KL term is off by default (beta = 0, as in Dr. GRPO and
DAPO); logits are divided by the sampling temperature in the trainer so pi is the sampled distribution.

This file only wires the pieces; the math lives in aha.algos and aha.rewards.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import algos
from ..config import to_dict
from ..data import get_task, render_prompt
from ..eval.reflection import reflection_rate, revision_rate
from ..models.load import load_model, reference_model
from ..rewards import RewardRunner, soft_overlong_penalty
from ..rollout import SamplingParams
from ..rollout.factory import make_engine
from . import checkpoint as ckpt
from .batching import build_batch, micro_batches
from .config import TrainConfig
from .forward import sequence_logprobs
from .metrics import MetricsLog, console_line, print_samples
from .optim import build_optimizer, build_scheduler
from .prompts import PromptStream


class GRPOTrainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        m = cfg.model
        self.model, self.tok = load_model(m.path, device=m.device, dtype=m.dtype, seed=cfg.seed,
                                          gradient_checkpointing=m.gradient_checkpointing, lora_r=m.lora.r,
                                          lora_alpha=m.lora.alpha, lora_dropout=m.lora.dropout,
                                          lora_target_modules=m.lora.target_modules,
                                          trust_remote_code=m.trust_remote_code)
        self.device = next(self.model.parameters()).device
        self.ref = reference_model(self.model) if cfg.algorithm.beta > 0 else None
        self.engine = make_engine(cfg.engine, self.model, self.tok)
        self.task = get_task(cfg.task.name, **cfg.task.options)
        self.train_rows = PromptStream(self.task.dataset("train"), cfg.seed)
        specs = [(self.task.accuracy_reward if r.name == "accuracy" else r.name, r.weight) for r in cfg.rewards.funcs]
        self.reward_names = [r.name for r in cfg.rewards.funcs]
        self.rewards = RewardRunner(specs, timeout=cfg.rewards.timeout, num_workers=cfg.rewards.num_workers,
                                    think_prefilled=cfg.task.prefill.strip().startswith("<think>"))
        self.optimizer = build_optimizer(self.model, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas,
                                         cfg.optim.eps)
        self.scheduler = build_scheduler(self.optimizer, total=cfg.steps * cfg.algorithm.mu,
                                         warmup=cfg.optim.warmup_steps, schedule=cfg.optim.schedule,
                                         min_ratio=cfg.optim.min_lr_ratio)
        self.advantage = algos.get_advantage(cfg.algorithm.advantage)
        self.log = MetricsLog(self.out, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                              wandb_project=cfg.logging.wandb_project, config=to_dict(cfg))
        self.stop_id = self.tok.eos_token_id
        self.step = 0
        self.stop_requested = False

    # ---- rollout ---------------------------------------------------------------------------------------
    def prompt_ids(self, rows: list[dict]) -> list[list[int]]:
        t = self.cfg.task
        texts = [render_prompt(r["question"], t.template, tokenizer=self.tok, system=t.system, prefill=t.prefill)
                 for r in rows]
        return [self.tok(x, add_special_tokens=False).input_ids for x in texts]

    def rollout(self, step: int):
        """-> (prompt ids, rows, completions, rewards (N, F), total (N,), metrics); N = groups kept * G."""
        cfg, G = self.cfg, self.cfg.sampling.group_size
        s = cfg.sampling
        want = cfg.batch.prompts_per_step
        keep_ids, keep_rows, keep_comps, keep_scores, keep_total = [], [], [], [], []
        metrics: dict[str, float] = {}
        rounds = cfg.algorithm.max_resample_rounds if cfg.algorithm.dynamic_sampling else 0
        for round_ in range(rounds + 1):
            rows = self.train_rows.take(want - len(keep_rows) if round_ else want)
            ids = self.prompt_ids(rows)
            params = SamplingParams(n=G, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                    max_tokens=s.max_new_tokens, stop_token_ids=[self.stop_id],
                                    seed=cfg.seed * 1_000_003 + step * 101 + round_)
            t0 = time.perf_counter()
            comps = self.engine.generate(ids, params)
            t1 = time.perf_counter()
            texts = [c.text for c in comps]
            result = self.rewards.score(texts, [rows[c.prompt_index] for c in comps])
            scores, total = result.scores, result.total
            if cfg.algorithm.overlong_penalty:
                pen = np.array([soft_overlong_penalty(len(c.token_ids), s.max_new_tokens, cfg.algorithm.overlong_cache)
                                for c in comps])
                scores, total = np.column_stack([scores, pen]), np.nan_to_num(total) + pen
            t2 = time.perf_counter()
            metrics["time/generate"] = metrics.get("time/generate", 0.0) + t1 - t0
            metrics["time/reward"] = metrics.get("time/reward", 0.0) + t2 - t1
            for k in ("reward/timeouts", "reward/errors"):   # per-function means are computed below, by config name
                metrics[k] = metrics.get(k, 0.0) + result.metrics.get(k, 0.0)
            groups = np.nan_to_num(total, nan=0.0).reshape(-1, G)
            flat = groups.std(axis=1) == 0
            metrics["frac_reward_zero_std"] = float(flat.mean()) if round_ == 0 else metrics["frac_reward_zero_std"]
            for g in range(len(rows)):
                if cfg.algorithm.dynamic_sampling and flat[g]:
                    continue
                keep_ids.append(ids[g])
                keep_rows.append(rows[g])
                sl = slice(g * G, (g + 1) * G)
                keep_comps.extend(comps[sl])
                keep_scores.append(scores[sl])
                keep_total.append(total[sl])
                if len(keep_rows) == want:
                    break
            if len(keep_rows) >= want:
                break
        if not keep_rows:   # dynamic sampling found no informative group: learn nothing this step
            metrics["dynamic/groups"] = 0
            return None, metrics
        for i, c in enumerate(keep_comps):   # re-index completions into the kept prompt list
            c.prompt_index = i // G
        metrics["dynamic/groups"] = len(keep_rows)
        return (keep_ids, keep_rows, keep_comps, np.concatenate(keep_scores), np.concatenate(keep_total)), metrics

    # ---- update ----------------------------------------------------------------------------------------
    def logprobs_no_grad(self, model, batch, idx_lists):
        out = torch.zeros_like(batch.loss_mask)
        with torch.no_grad():
            for idx in idx_lists:
                mb = batch.select(idx).to(self.device)
                logp, _ = sequence_logprobs(model, mb.input_ids, mb.attention_mask,
                                            temperature=self.cfg.sampling.temperature)
                out[idx, :logp.shape[1]] = logp.float().cpu()
        return out

    def update(self, batch) -> dict:
        cfg, a = self.cfg, self.cfg.algorithm
        mbs = micro_batches(batch, cfg.batch.micro_batch_size, cfg.batch.micro_batch_tokens)
        # Normalise every micro-batch by the whole batch's denominator: their gradients then sum to exactly
        # the full-batch loss's gradient, whatever the split.
        denom = algos.agg_denominator(batch.loss_mask, a.agg)
        n_tokens = float(batch.loss_mask.sum().clamp(min=1))
        t0 = time.perf_counter()
        if self.ref is not None:
            with self.ref() as ref_model:
                batch.ref_logp = self.logprobs_no_grad(ref_model, batch, mbs)
        if a.mu > 1:
            batch.old_logp = self.logprobs_no_grad(self.model, batch, mbs)
        t1 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        grad_norm = torch.tensor(0.0)
        for _ in range(a.mu):
            self.optimizer.zero_grad(set_to_none=True)
            for idx in mbs:
                mb = batch.select(idx).to(self.device)
                share = float(mb.loss_mask.sum()) / n_tokens       # metrics are token means: weight by tokens
                logp, entropy = sequence_logprobs(self.model, mb.input_ids, mb.attention_mask,
                                                  temperature=cfg.sampling.temperature, with_entropy=True)
                old = mb.old_logp if mb.old_logp is not None else logp.detach()
                loss, m = algos.policy_loss(logp, old, mb.advantages, mb.loss_mask, clip_low=a.clip_low,
                                            clip_high=a.clip_high, clip_c=a.clip_c, agg=a.agg, norm_len=a.norm_len,
                                            denom=denom)
                m = dict(m)
                if mb.ref_logp is not None:
                    kl = algos.agg_loss(algos.kl(logp, mb.ref_logp, kind=a.kl_kind), mb.loss_mask, a.agg, a.norm_len,
                                        denom=denom)
                    loss = loss + a.beta * kl
                    m["kl"] = kl.detach()
                ent = algos.agg_loss(entropy, mb.loss_mask, a.agg, a.norm_len, denom=denom)
                if a.entropy_coef:
                    loss = loss - a.entropy_coef * ent
                m["entropy"] = ent.detach()
                m["loss"] = loss.detach()
                m["logp_mismatch"] = ((logp.detach() - mb.sampler_logp).abs() * mb.loss_mask).sum() / mb.loss_mask.sum().clamp(min=1)
                loss.backward()
                for k, v in m.items():   # loss-like terms already sum over micro-batches; the rest are token means
                    wk = 1.0 if k in ("loss", "kl", "entropy") else share
                    sums[k] = sums.get(k, 0.0) + wk * v.detach().float().cpu() / a.mu
            if cfg.optim.max_grad_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
            else:
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
            self.optimizer.step()
            self.scheduler.step()
        t2 = time.perf_counter()
        out = {k: float(v) for k, v in sums.items()}
        out.update({"grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0],
                    "time/logprobs": t1 - t0, "time/update": t2 - t1, "micro_batches": len(mbs)})
        return out

    # ---- one step ----------------------------------------------------------------------------------------
    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        got, metrics = self.rollout(step)
        if got is None:
            metrics["time/step"] = time.perf_counter() - t0
            return metrics
        ids, rows, comps, scores, total = got
        G = self.cfg.sampling.group_size
        kw = {"std_scale": self.cfg.algorithm.std_scale} if self.cfg.algorithm.advantage == "grpo" else {}
        adv, adv_metrics = self.advantage(torch.as_tensor(total, dtype=torch.float64), G, **kw)
        batch = build_batch(ids, comps, adv.float(), self.tok.pad_token_id, self.cfg.algorithm.mask_truncated)
        metrics.update(self.update(batch))
        metrics.update({k: float(v) for k, v in dict(adv_metrics).items()})
        lengths = np.array([len(c.token_ids) for c in comps])
        finite = total[np.isfinite(total)]
        metrics.update({
            "reward/mean": float(finite.mean()) if finite.size else float("nan"),
            "reward/std": float(finite.std()) if finite.size else float("nan"),
            "len/mean": float(lengths.mean()), "len/min": int(lengths.min()), "len/max": int(lengths.max()),
            "frac_truncated": float(np.mean([c.finish_reason == "length" for c in comps])),
            "reflection_rate": reflection_rate([c.text for c in comps]),
            "revision_rate": revision_rate([c.text for c in comps]),
        })
        names = self.reward_names + (["overlong"] if scores.shape[1] > len(self.reward_names) else [])
        for j, name in enumerate(names):
            col = scores[:, j]
            col = col[np.isfinite(col)]
            metrics[f"reward/{name}"] = float(col.mean()) if col.size else float("nan")
        metrics["time/step"] = time.perf_counter() - t0
        metrics["tokens_per_s"] = float(lengths.sum()) / max(metrics["time/generate"], 1e-9)
        if self.cfg.logging.samples_every and step % self.cfg.logging.samples_every == 0:
            self.write_samples(step, rows, comps, total)
        return metrics

    def evaluate(self) -> dict:
        """Held-out pass@1 (k samples each), format and length on the task's test split."""
        from ..eval import eval_metrics

        lg, t = self.cfg.logging, self.cfg.task
        test = self.task.dataset("test")
        rows = [test[i] for i in range(min(lg.eval_size, len(test)))]
        return eval_metrics(self.engine, self.tok, rows, accuracy=self.task.accuracy_reward, k=lg.eval_k,
                            template=t.template, system=t.system, prefill=t.prefill, seed=self.cfg.seed,
                            max_tokens=self.cfg.sampling.max_new_tokens, temperature=lg.eval_temperature,
                            top_p=lg.eval_top_p, batch_size=lg.eval_batch)

    def write_samples(self, step, rows, comps, total, k: int = 4) -> None:
        G = self.cfg.sampling.group_size
        picked = [{"step": step, "question": rows[c.prompt_index]["question"], "completion": c.text,
                   "reward": float(np.nan_to_num(total[i]))} for i, c in enumerate(comps) if i % G == 0][:k]
        with (self.out / "samples.jsonl").open("a") as f:
            for r in picked:
                f.write(json.dumps(r) + "\n")
        if self.cfg.logging.progress:
            print_samples(picked)

    # ---- the run -----------------------------------------------------------------------------------------
    def save(self, step: int, *, rng: dict | None = None, data_position: int | None = None) -> Path:
        pos = self.train_rows.position if data_position is None else data_position
        return ckpt.save_checkpoint(self.out, step, model=self.model, tokenizer=self.tok, optimizer=self.optimizer,
                                    scheduler=self.scheduler, keep_last=self.cfg.checkpoint.keep_last,
                                    rng=rng, extra={"data_position": pos})

    def maybe_resume(self) -> None:
        if not self.cfg.resume:
            return
        last = ckpt.latest_checkpoint(self.out)
        if last is None:
            print(f"resume=true but {self.out}/checkpoints holds no checkpoint: starting from step 0")
            return
        state = ckpt.load_checkpoint(last, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        self.step = state["step"]
        self.train_rows.position = state["data_position"]
        self.log.truncate_after(self.step)
        print(f"resumed from {last} (step {self.step})")

    def _on_signal(self, signum, frame):
        if self.stop_requested:      # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop_requested = True
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step, saving a checkpoint, then exiting"
              " (press Ctrl-C again to stop at once)")

    def fit(self) -> dict:
        cfg = self.cfg
        (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.maybe_resume()
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.logging.progress, desc="grpo", leave=False)
        saved_step = self.step
        step_start = None
        t_start = time.perf_counter()
        try:
            while self.step < cfg.steps and not self.stop_requested:
                # State at the start of the step: what a checkpoint must hold if this step dies half-way.
                step_start = (ckpt.rng_state(), self.train_rows.position)
                metrics = self.train_step(self.step + 1)
                step_start = None
                self.step += 1
                lg = cfg.logging
                if lg.eval_size and ((lg.eval_every and self.step % lg.eval_every == 0) or self.step == cfg.steps):
                    metrics.update(self.evaluate())
                self.log.log(metrics, self.step)
                bar.update(1)
                if cfg.logging.log_every and self.step % cfg.logging.log_every == 0:
                    bar.write(console_line(self.step, cfg.steps, metrics))
                if cfg.checkpoint.save_every and self.step % cfg.checkpoint.save_every == 0:
                    self.save(self.step)
                    saved_step = self.step
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
            if self.step != saved_step or (self.step and ckpt.latest_checkpoint(self.out) is None):
                rng, pos = step_start if step_start is not None else (None, None)
                path = self.save(self.step, rng=rng, data_position=pos)
                print(f"saved {path}")
        return {"steps": self.step, "seconds": time.perf_counter() - t_start, "stopped_early": self.stop_requested}

    def close(self) -> None:
        self.rewards.close()
        self.log.close()


def train(cfg: TrainConfig) -> dict:
    trainer = GRPOTrainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
