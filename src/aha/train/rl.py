"""What every RL trainer is made of, built once: the policy and its engine, and the stages of a step.

    RLTrainer(cfg)  -> .model (HF, the engine generates with it), .policy (the training forward: optimised,
                       checkpointed, sharded), .ref, .engine, .task
                       .rollout  prompts -> completions -> rewards           (train/rollout.py)
                       .update   the policy loss over micro-batches -> step  (train/update.py)
GRPOTrainer adds a critic-free advantage estimator (train/grpo.py), PPOTrainer a critic (train/critic.py); each
only writes its train_step. Both log the same rollout statistics, evaluate the same way (aha.eval.evaluate_task
on the test split) and run in the same loop (train/loop.py).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .. import algos
from ..config import ConfigError
from ..data.templates import template_notice
from ..eval.context import drop_overlong, model_context
from ..models.load import reference_model, resolve_device
from ..rollout.factory import check_fast_settings, make_engine
from .config import TrainConfig
from .dist import Dist, gathered
from .forward import LogprobModel
from .loop import TrainLoop, held_out_metrics
from .memory_setup import cap_memory, memory_metrics, plan_memory, size_engine, uncap_memory
from .prompts import PromptStream
from .rollout import Rollout, RolloutBatch
from .run_dir import check_out_dir
from .update import PolicyUpdate, optimizer_for


class RLTrainer(TrainLoop):
    def __init__(self, cfg: TrainConfig, dist: Dist | None = None):
        check_out_dir(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)  # before the model loads
        dist = dist or Dist.from_env()
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        m, P = cfg.model, cfg.batch.prompts_per_step
        if P % dist.world:
            raise ConfigError(
                "batch.prompts_per_step",
                f"{P} prompts do not split over {dist.world} processes; "
                f"use a multiple of {dist.world}",
            )
        # Before any weight is loaded: fit check, null memory keys resolved, breakdown printed (train/memory.py).
        echo = print if dist.is_main else (lambda *_: None)
        device = resolve_device(dist.device(m.device))
        check_fast_settings(
            cfg.engine,
            device.type == "cuda",
            cfg.kv_cache_dtype,
            cfg.engine_weights_dtype,
            prefix="engine_",
        )
        self.memory = plan_memory(cfg, dist.world, device, echo)
        model, tok = m.load(seed=cfg.seed, device=dist.device(m.device), train=True)
        if dist.enabled and m.lora.r > 0:
            raise RuntimeError(
                "LoRA with several processes is not supported yet; run LoRA on one GPU"
            )
        self.model = model  # the HF model: the engine generates with it
        self.ref = reference_model(model) if cfg.algorithm.beta > 0 else None  # before sharding
        policy = dist.shard(LogprobModel(model))  # the training forward: optimised, checkpointed
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
        self.task = cfg.task.build()
        rows = self.task.dataset("train")
        rows, dropped = drop_overlong(  # untrusted data: a prompt the context cannot hold
            rows,
            lambda q: cfg.task.render(q, tok),
            tok,
            model_context(model),
            cfg.sampling.max_new_tokens,
        )
        if dropped:
            echo(f"train: {dropped} training prompts dropped: with sampling.max_new_tokens they exceed "
                 f"the model's {model_context(model)}-token context")  # fmt: skip
        notice = template_notice(tok, cfg.task.template, m.path)
        if notice:
            echo(notice)
        optimizer, scheduler = optimizer_for(policy, cfg.optim, cfg.steps * cfg.algorithm.mu)
        super().__init__(
            cfg,
            dist=dist,
            policy=policy,
            tokenizer=tok,
            optimizer=optimizer,
            scheduler=scheduler,
            stream=PromptStream(rows, cfg.seed),
        )
        try:
            self.engine = make_engine(
                cfg.engine,
                model,
                tok,
                kv_cache_dtype=cfg.kv_cache_dtype,
                weights_dtype=cfg.engine_weights_dtype,
            )
        except ConfigError as e:  # the engine's weights_dtype is this config's engine_weights_dtype
            if e.key != "weights_dtype":
                raise
            msg = e.message.replace("set weights_dtype=", "set engine_weights_dtype=")
            raise ConfigError("engine_weights_dtype", msg) from None
        size_engine(self.engine, self.memory)  # the KV cache gets what the plan left
        self.rollout = Rollout(
            cfg,
            dist=dist,
            engine=self.engine,
            tokenizer=tok,
            policy=policy,
            task=self.task,
            stream=self.stream,
        )
        self.update = PolicyUpdate(
            cfg,
            dist=dist,
            device=self.device,
            policy=policy,
            ref=self.ref,
            optimizer=optimizer,
            scheduler=scheduler,
        )
        # memory.max_memory_gib is a hard cap on a GPU from here to close(): set last, so that a start that
        # fails leaves no cap behind in the process (a benchmark running TRL next, a pipeline's next stage)
        self.memory_cap = device if cap_memory(device, cfg.memory.max_memory_gib) else None

    def gathered_rewards(self, rb: RolloutBatch) -> np.ndarray:
        """(N_all,) every rank's rewards, in rank order (groups never split)."""
        return np.concatenate(self.dist.gather(rb.rewards))

    def group_metrics(self, rewards: np.ndarray) -> dict:
        """Over all ranks' trained groups (`rewards` gathered): the fraction whose valid rewards are all equal
        (no signal for a group baseline) and the fraction of completions no reward function applies to."""
        flat = algos.zero_std_groups(rewards, self.cfg.sampling.group_size)
        return {
            "frac_reward_zero_std": float(flat.float().mean()),
            "frac_reward_nan": float(np.isnan(rewards).mean()),
        }

    def release_engine(self) -> None:
        """engine_release: the update gets the KV cache's memory; the next rollout allocates it again."""
        if self.cfg.engine_release and hasattr(self.engine, "release"):
            self.engine.release()

    def memory_metrics(self) -> dict:
        return memory_metrics(self.memory, self.device)

    def log_samples(self, step: int, rb: RolloutBatch) -> None:
        lg = self.cfg.logging
        if lg.samples_every and step % lg.samples_every == 0 and self.dist.is_main:
            self.log.samples(step, self.rollout.write_samples(self.out, step, rb))

    def evaluate(self) -> dict:
        """Held-out pass@1 (k samples each), format and length on the task's test split (the `eval` section).
        Under torchrun every rank evaluates the same problems on the gathered weights (generation is
        collective there)."""
        from ..eval import evaluate_task

        with gathered(self.policy):
            res = evaluate_task(
                self.engine,
                self.tok,
                self.cfg.task,
                self.cfg.eval,
                seed=self.cfg.seed,
                built=self.task,
                log=self.print,
            )
        return held_out_metrics(res)

    def close(self) -> None:
        self.rollout.close()
        if self.memory_cap is not None:
            uncap_memory(self.memory_cap)
        super().close()


def run(trainer: RLTrainer) -> dict:
    """fit, then close whatever happened."""
    try:
        return trainer.fit()
    finally:
        trainer.close()
        trainer.dist.close()
