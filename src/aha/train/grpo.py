"""The RL loop of R1-Zero: GRPO (and its Dr. GRPO / DAPO variants) on rule-based rewards.

One step (DeepSeekMath eq. 21 / R1 eq. 1):
    prompts q_1..q_P  --engine-->  G completions o_i each (temperature T)  --rewards-->  r_i
    A_i = (r_i - mean_g(r)) / (std_g(r) + eps)                             (aha.algos.advantages)
    L = agg_t[ -min(rho_t A_i, clip(rho_t, 1-e_low, 1+e_high) A_i) ] + beta * agg_t[KL_k3(pi || pi_ref)]
    with rho_t = pi(o_t) / pi_old(o_t); mu = 1 makes pi_old = pi (ratio 1), mu > 1 reuses the batch mu times.
Departures from the paper, all configurable: the KL term is off by default (beta = 0, as in Dr. GRPO and
DAPO); logits are divided by the sampling temperature in the trainer so pi is the sampled distribution.

Under torchrun each rank takes a contiguous share of the step's P prompts (groups never split), advantages are
computed on the gathered rewards of all ranks, and every micro-batch loss is normalised by the global
denominator, so N processes compute the same update as one. This file only wires the pieces; the math lives
in aha.algos and aha.rewards.
"""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import torch

from .. import algos
from ..data import get_task, render_prompt
from ..eval.reflection import reflection_rate, revision_rate
from ..models.load import load_model, reference_model, resolve_device
from ..rewards import RewardRunner, soft_overlong_penalty
from ..rollout import SamplingParams
from ..rollout.factory import make_engine
from .batching import build_batch
from .config import TrainConfig
from .dist import Dist, gathered
from .forward import LogprobModel
from .loop import TrainLoop
from .memory_setup import memory_metrics, plan_memory, size_engine
from .metrics import print_samples
from .optim import build_optimizer, build_scheduler
from .prompts import PromptStream
from .update import PolicyUpdate


class GRPOTrainer(PolicyUpdate, TrainLoop):
    name = "grpo"

    def __init__(self, cfg: TrainConfig, dist: Dist | None = None):
        dist = dist or Dist.from_env()
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        m, P = cfg.model, cfg.batch.prompts_per_step
        if P % dist.world:
            from ..config import ConfigError

            raise ConfigError(
                "batch.prompts_per_step",
                f"{P} prompts do not split over {dist.world} processes; "
                f"use a multiple of {dist.world}",
            )
        # Before any weight is loaded: fit check, null memory keys resolved, breakdown printed (train/memory.py).
        echo = print if dist.is_main else (lambda *_: None)
        self.memory = plan_memory(cfg, dist.world, resolve_device(dist.device(m.device)), echo)
        model, tok = load_model(
            m.path,
            device=dist.device(m.device),
            dtype=m.dtype,
            seed=cfg.seed,
            gradient_checkpointing=m.gradient_checkpointing,
            lora_r=m.lora.r,
            lora_alpha=m.lora.alpha,
            lora_dropout=m.lora.dropout,
            lora_target_modules=m.lora.target_modules,
            trust_remote_code=m.trust_remote_code,
        )
        if dist.enabled and m.lora.r > 0:
            raise RuntimeError(
                "LoRA with several processes is not supported yet; run LoRA on one GPU"
            )
        self.model = model  # the HF model: the engine generates with it
        self.ref = (
            reference_model(model) if cfg.algorithm.beta > 0 else None
        )  # copied before sharding
        policy = dist.shard(
            LogprobModel(model)
        )  # the training forward: optimised, checkpointed, sharded
        if dist.enabled:
            # FSDP2 must see a forward through its root before generate() calls the layers alone; the root
            # keeps its parameters gathered after a forward, so shard them again before the optimizer sees them.
            one = torch.ones((1, 2), dtype=torch.long, device=model.device)
            with torch.no_grad():
                policy(one, one)
            policy.reshard()
        if self.ref is not None and dist.enabled:
            with self.ref() as ref_model:
                ref_model = dist.shard(LogprobModel(ref_model))
            self.ref = lambda: contextlib.nullcontext(ref_model)
        self.device = next(model.parameters()).device
        self.task = get_task(cfg.task.name, **cfg.task.options)
        optimizer = build_optimizer(
            policy,
            cfg.optim.lr,
            cfg.optim.weight_decay,
            cfg.optim.betas,
            cfg.optim.eps,
            name=cfg.optim.name,
        )
        scheduler = build_scheduler(
            optimizer,
            total=cfg.steps * cfg.algorithm.mu,
            warmup=cfg.optim.warmup_steps,
            schedule=cfg.optim.schedule,
            min_ratio=cfg.optim.min_lr_ratio,
        )
        super().__init__(
            cfg,
            dist=dist,
            policy=policy,
            tokenizer=tok,
            optimizer=optimizer,
            scheduler=scheduler,
            stream=PromptStream(self.task.dataset("train"), cfg.seed),
        )
        self.engine = make_engine(cfg.engine, model, tok)
        size_engine(self.engine, self.memory)  # the KV cache gets what the plan left
        specs = [
            (self.task.accuracy_reward if r.name == "accuracy" else r.name, r.weight)
            for r in cfg.rewards.funcs
        ]
        self.reward_names = [r.name for r in cfg.rewards.funcs]
        self.rewards = RewardRunner(
            specs,
            timeout=cfg.rewards.timeout,
            num_workers=cfg.rewards.num_workers,
            think_prefilled=cfg.task.prefill.strip().startswith("<think>"),
        )
        self.advantage = algos.get_advantage(cfg.algorithm.advantage)
        self.stop_id = tok.eos_token_id

    # ---- rollout ---------------------------------------------------------------------------------------
    def prompt_ids(self, rows: list[dict]) -> list[list[int]]:
        t = self.cfg.task
        texts = [
            render_prompt(
                r["question"], t.template, tokenizer=self.tok, system=t.system, prefill=t.prefill
            )
            for r in rows
        ]
        return [self.tok(x, add_special_tokens=False).input_ids for x in texts]

    def generate(self, ids: list[list[int]], params: SamplingParams, first_index: int):
        """Completions for `ids`; with sampling.seed_per_prompt each prompt gets its own seed (its global index),
        so samples do not depend on how prompts are batched or split over processes."""
        with gathered(self.policy):
            if not self.cfg.sampling.seed_per_prompt:
                return self.engine.generate(ids, params)
            out = []
            for j, p in enumerate(ids):
                for c in self.engine.generate(
                    [p],
                    SamplingParams(**{**params.__dict__, "seed": params.seed + first_index + j}),
                ):
                    c.prompt_index = j
                    out.append(c)
            return out

    def rollout(self, step: int):
        """This rank's share of the step: (prompt ids, rows, completions, scores (N, F), total (N,)), metrics.

        With dynamic sampling (DAPO) groups whose rewards are all equal are dropped and more prompts drawn, up to
        max_resample_rounds extra rounds; ranks draw in lockstep so the data stream stays identical on all.
        """
        cfg, s, a = self.cfg, self.cfg.sampling, self.cfg.algorithm
        G, W, R = s.group_size, self.dist.world, self.dist.rank
        want = cfg.batch.prompts_per_step // W
        kept: list[tuple] = []  # (ids, row, completions, scores, total) per kept group
        fallback = None
        metrics: dict[str, float] = {
            "time/generate": 0.0,
            "time/reward": 0.0,
            "reward/timeouts": 0.0,
            "reward/errors": 0.0,
        }
        for round_ in range((a.max_resample_rounds if a.dynamic_sampling else 0) + 1):
            need = self.dist.max_int(want - len(kept))
            if need == 0:
                break
            first = self.stream.position + R * need
            rows = self.stream.take(need * W)[R * need : (R + 1) * need]
            ids = self.prompt_ids(rows)
            params = SamplingParams(
                n=G,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k,
                max_tokens=s.max_new_tokens,
                stop_token_ids=[self.stop_id],
                seed=cfg.seed * 1_000_003 + step * 10_007 + round_ * 101,
            )
            t0 = time.perf_counter()
            comps = self.generate(ids, params, first)
            t1 = time.perf_counter()
            result = self.rewards.score(
                [c.text for c in comps], [rows[c.prompt_index] for c in comps]
            )
            scores, total = result.scores, result.total
            if a.overlong_penalty:
                pen = self.overlong(comps)
                scores, total = np.column_stack([scores, pen]), np.nan_to_num(total) + pen
            metrics["time/generate"] += t1 - t0
            metrics["time/reward"] += time.perf_counter() - t1
            for k in (
                "reward/timeouts",
                "reward/errors",
            ):  # per-function means are computed by config name
                metrics[k] += result.metrics.get(k, 0.0)
            flat = np.nan_to_num(total, nan=0.0).reshape(-1, G).std(axis=1) == 0
            if round_ == 0:
                metrics["frac_reward_zero_std"] = float(flat.mean())
            for g in range(len(rows)):
                sl = slice(g * G, (g + 1) * G)
                group = (ids[g], rows[g], comps[sl], scores[sl], total[sl])
                fallback = fallback or group
                if len(kept) < want and not (a.dynamic_sampling and flat[g]):
                    kept.append(group)
        metrics["dynamic/groups"] = float(self.dist.sum(torch.tensor(float(len(kept)))))
        dummy = not kept  # this rank found nothing to learn from; it still joins the collectives
        if dummy:
            kept = [fallback]
        ids = [k[0] for k in kept]
        comps = [c for i, k in enumerate(kept) for c in k[2]]
        for i, c in enumerate(comps):  # re-index completions into the kept prompt list
            c.prompt_index = i // G
        return (
            ids,
            [k[1] for k in kept],
            comps,
            np.concatenate([k[3] for k in kept]),
            np.concatenate([k[4] for k in kept]),
            dummy,
        ), metrics

    def overlong(self, comps) -> np.ndarray:
        """DAPO's soft overlong penalty of each completion, (N,)."""
        s, a = self.cfg.sampling, self.cfg.algorithm
        return np.array(
            [
                soft_overlong_penalty(len(c.token_ids), s.max_new_tokens, a.overlong_cache)
                for c in comps
            ]
        )

    def greedy_rewards(self, ids: list[list[int]], rows: list[dict]) -> np.ndarray:
        """ReMax's baseline: the total reward of each prompt's greedy completion (overlong penalty included, as
        for the sampled ones), (P,)."""
        params = SamplingParams(
            n=1,
            temperature=0.0,
            max_tokens=self.cfg.sampling.max_new_tokens,
            stop_token_ids=[self.stop_id],
        )
        with gathered(self.policy):
            comps = self.engine.generate(ids, params)
        total = self.rewards.score([c.text for c in comps], rows).total
        if self.cfg.algorithm.overlong_penalty:
            total = np.nan_to_num(total) + self.overlong(comps)
        return np.asarray(total, dtype=np.float64)

    # ---- one step ----------------------------------------------------------------------------------------
    def advantages(self, total: np.ndarray, baseline: np.ndarray | None = None):
        """Advantages of this rank's completions, computed over the gathered rewards of all ranks (and, for
        ReMax, the gathered greedy-completion rewards, one per prompt)."""
        G, a = self.cfg.sampling.group_size, self.cfg.algorithm
        parts = self.dist.gather(total)
        kw = {"std_scale": a.std_scale} if a.advantage == "grpo" else {}
        if baseline is not None:
            kw["baseline"] = torch.as_tensor(
                np.concatenate(self.dist.gather(baseline)), dtype=torch.float64
            )
        adv, metrics = self.advantage(
            torch.as_tensor(np.concatenate(parts), dtype=torch.float64), G, **kw
        )
        start = sum(len(p) for p in parts[: self.dist.rank])
        return adv[start : start + len(total)].float(), {
            k: float(v) for k, v in dict(metrics).items()
        }

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        (ids, rows, comps, scores, total, dummy), metrics = self.rollout(step)
        if (
            metrics["dynamic/groups"] == 0
        ):  # no rank found an informative group: nothing to learn this step
            metrics["time/step"] = time.perf_counter() - t0
            return metrics
        if dummy:  # rewards of a dropped group must not enter anybody's statistics
            total = np.full_like(total, np.nan)
        baseline = None
        if self.cfg.algorithm.advantage == "remax":
            t1 = time.perf_counter()
            baseline = self.greedy_rewards(ids, rows)
            metrics["time/generate"] += time.perf_counter() - t1
        adv, adv_metrics = self.advantages(total, baseline)
        if self.cfg.engine_release and hasattr(self.engine, "release"):
            self.engine.release()  # the update gets the KV cache's memory; the next rollout allocates again
        batch = build_batch(
            ids, comps, adv, self.tok.pad_token_id, self.cfg.algorithm.mask_truncated
        )
        if dummy:
            batch.loss_mask.zero_()
        metrics.update(self.update(batch))
        metrics.update(adv_metrics)
        metrics.update(self.rollout_metrics(comps, scores, total, dummy, metrics["time/generate"]))
        metrics["time/step"] = time.perf_counter() - t0
        metrics.update(memory_metrics(self.memory, self.device))
        lg = self.cfg.logging
        if lg.samples_every and step % lg.samples_every == 0 and self.dist.is_main:
            self.write_samples(step, rows, comps, total)
        return metrics

    def rollout_metrics(self, comps, scores, total, dummy: bool, gen_seconds: float) -> dict:
        """Reward, length and reflection statistics over all ranks' completions."""
        mine = (
            []
            if dummy
            else [(len(c.token_ids), c.finish_reason == "length", c.text) for c in comps]
        )
        everyone = self.dist.gather((mine, None if dummy else scores))
        lengths = np.array([n for part, _ in everyone for n, _, _ in part] or [0])
        texts = [t for part, _ in everyone for _, _, t in part]
        sc = [s for _, s in everyone if s is not None]
        scores = np.concatenate(sc) if sc else np.full((1, scores.shape[1]), np.nan)
        total = np.concatenate([p for p in self.dist.gather(total)])
        finite = total[np.isfinite(total)]
        nan = float("nan")
        out = {
            "reward/mean": float(finite.mean()) if finite.size else nan,
            "reward/std": float(finite.std()) if finite.size else nan,
            "len/mean": float(lengths.mean()),
            "len/min": int(lengths.min()),
            "len/max": int(lengths.max()),
            "frac_truncated": float(
                np.mean([t for part, _ in everyone for _, t, _ in part] or [0])
            ),
            "reflection_rate": reflection_rate(texts) if texts else nan,
            "revision_rate": revision_rate(texts) if texts else nan,
        }
        names = self.reward_names + (
            ["overlong"] if scores.shape[1] > len(self.reward_names) else []
        )
        for j, name in enumerate(names):
            col = scores[:, j][np.isfinite(scores[:, j])]
            out[f"reward/{name}"] = float(col.mean()) if col.size else nan
        out["tokens_per_s"] = float(lengths.sum()) / max(gen_seconds, 1e-9) if texts else 0.0
        return out

    def evaluate(self) -> dict:
        """Held-out pass@1 (k samples each), format and length on the task's test split. Under torchrun every
        rank evaluates the same problems on the gathered weights (generation is collective there)."""
        from ..eval import eval_metrics

        lg, t = self.cfg.logging, self.cfg.task
        test = self.task.dataset("test")
        rows = [test[i] for i in range(min(lg.eval_size, len(test)))]
        with gathered(self.policy):
            return eval_metrics(
                self.engine,
                self.tok,
                rows,
                accuracy=self.task.accuracy_reward,
                k=lg.eval_k,
                template=t.template,
                system=t.system,
                prefill=t.prefill,
                seed=self.cfg.seed,
                max_tokens=self.cfg.sampling.max_new_tokens,
                temperature=lg.eval_temperature,
                top_p=lg.eval_top_p,
                batch_size=lg.eval_batch,
            )

    def write_samples(self, step, rows, comps, total, k: int = 4) -> None:
        G = self.cfg.sampling.group_size
        picked = [
            {
                "step": step,
                "question": rows[c.prompt_index]["question"],
                "completion": c.text,
                "reward": float(np.nan_to_num(total[i])),
            }
            for i, c in enumerate(comps)
            if i % G == 0
        ][:k]
        with (self.out / "samples.jsonl").open("a") as f:
            for r in picked:
                f.write(json.dumps(r) + "\n")
        if self.cfg.logging.progress:
            print_samples(picked)

    def close(self) -> None:
        self.rewards.close()
        super().close()


def train(cfg: TrainConfig) -> dict:
    trainer = GRPOTrainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
        trainer.dist.close()
