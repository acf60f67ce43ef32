"""The names users bring from TRL and verl, mapped to aha's keys: consulted only when a key is unknown.

    ALIASES[foreign dotted key] = (aha key, note)

A foreign key is matched by its full dotted path relative to any enclosing config (verl's nested
`actor_rollout_ref.rollout.n`, `algorithm.adv_estimator`) or by its last part alone (TRL's flat
`num_generations`, wherever it is written). The aha key is relative to a training config (TrainConfig); inside
a pipeline it is found under the stage that holds it (`rl.sampling.group_size`). A note says where the
meanings differ. Sources: TRL's GRPOConfig / SFTConfig and verl's ppo_trainer.yaml, as of 2025.
"""

from __future__ import annotations

import dataclasses
import typing

ALIASES: dict[str, tuple[str, str]] = {
    # ---- TRL (GRPOConfig, SFTConfig, TrainingArguments): flat names --------------------------------------
    "num_generations": ("sampling.group_size", ""),
    "max_completion_length": ("sampling.max_new_tokens", ""),
    "max_prompt_length": (
        "memory.prompt_tokens",
        "aha does not cut prompts; this is the prompt length the memory plan assumes",
    ),
    "temperature": ("sampling.temperature", ""),
    "top_p": ("sampling.top_p", ""),
    "top_k": ("sampling.top_k", ""),
    "epsilon": ("algorithm.clip_low", ""),
    "epsilon_high": ("algorithm.clip_high", ""),
    "delta": ("algorithm.clip_c", "the same upper bound on the ratio for negative advantages"),
    "loss_type": (
        "algorithm.agg",
        "TRL's grpo = seq-mean-token-mean, dapo/bnpo = token-mean, dr_grpo = seq-mean-token-sum-norm",
    ),
    "importance_sampling_level": (
        "algorithm.policy_loss",
        "TRL's sequence = gspo, token = ppo_clip; aha's gspo defaults to GSPO's clip 3e-4/4e-4 where TRL "
        "keeps epsilon=0.2",
    ),
    "num_iterations": ("algorithm.mu", ""),
    "beta": ("algorithm.beta", ""),
    "scale_rewards": ("algorithm.std_scale", "TRL's true = group, false = none"),
    "mask_truncated_completions": ("algorithm.mask_truncated", ""),
    "reward_weights": (
        "rewards.funcs",
        "each function's weight: rewards.funcs=[{name: accuracy, weight: 1.0}]",
    ),
    "learning_rate": ("optim.lr", ""),
    "lr_scheduler_type": ("optim.schedule", ""),
    "warmup_steps": ("optim.warmup_steps", ""),
    "weight_decay": ("optim.weight_decay", ""),
    "max_grad_norm": ("optim.max_grad_norm", ""),
    "adam_beta1": ("optim.betas", "optim.betas=[0.9, 0.99]"),
    "adam_beta2": ("optim.betas", "optim.betas=[0.9, 0.99]"),
    "optim": ("optim.name", ""),
    "per_device_train_batch_size": (
        "batch.micro_batch_size",
        "sequences per forward/backward; a step's prompts are batch.prompts_per_step",
    ),
    "gradient_accumulation_steps": (
        "batch.prompts_per_step",
        "aha accumulates prompts_per_step x G / micro_batch_size micro-batches per step",
    ),
    "generation_batch_size": ("batch.prompts_per_step", "prompts per step (x sampling.group_size)"),
    "max_steps": ("steps", ""),
    "num_train_epochs": ("epochs", "aha sft; aha train counts steps"),
    "output_dir": ("out", ""),
    "model_name_or_path": ("model.path", ""),
    "gradient_checkpointing": ("model.gradient_checkpointing", ""),
    "torch_compile": ("model.compile", "aha compiles each decoder layer of the training forward"),
    "bf16": ("model.dtype", "model.dtype=bfloat16"),
    "logging_steps": ("logging.log_every", ""),
    "eval_steps": ("logging.eval_every", ""),
    "save_steps": ("checkpoint.save_every", ""),
    "save_total_limit": ("checkpoint.keep_last", ""),
    "report_to": ("logging.wandb", "logging.wandb=true or logging.tensorboard=true"),
    "resume_from_checkpoint": ("resume", "resume=true continues the run in out"),
    "use_vllm": ("engine", "aha's own fast engine: engine=fast"),
    "max_length": ("data.max_length", "aha sft"),
    "packing": ("data.packing", "aha sft"),
    "warmup_ratio": ("optim.warmup_steps", "aha takes steps: warmup_ratio x steps"),
    "use_peft": ("model.lora", "model.lora={r: 16} turns LoRA on"),
    "lora_r": ("model.lora.r", ""),
    "lora_alpha": ("model.lora.alpha", ""),
    "lora_dropout": ("model.lora.dropout", ""),
    "lora_target_modules": ("model.lora.target_modules", ""),
    "torch_dtype": ("model.dtype", ""),
    "system_prompt": ("task.system", ""),
    "dataset_text_field": ("data.text_key", "aha sft: the column of language-modeling rows"),
    "vllm_importance_sampling_correction": (
        "algorithm.rollout_is",
        "TRL's true = its vllm_importance_sampling_mode (sequence_mask); aha's default is off",
    ),
    "vllm_importance_sampling_mode": ("algorithm.rollout_is", ""),
    "vllm_importance_sampling_clip_max": ("algorithm.rollout_is_max", ""),
    "vllm_importance_sampling_cap": ("algorithm.rollout_is_max", ""),
    "vllm_importance_sampling_clip_min": ("algorithm.rollout_is_min", ""),
    # ---- verl (ppo_trainer.yaml): nested names -------------------------------------------------------------
    "actor_rollout_ref.rollout.n": ("sampling.group_size", ""),
    "actor_rollout_ref.rollout.temperature": ("sampling.temperature", ""),
    "actor_rollout_ref.rollout.top_p": ("sampling.top_p", ""),
    "actor_rollout_ref.rollout.top_k": ("sampling.top_k", ""),
    "actor_rollout_ref.rollout.response_length": ("sampling.max_new_tokens", ""),
    "actor_rollout_ref.rollout.name": ("engine", "aha's engines: auto, hf, fast"),
    "actor_rollout_ref.actor.optim.lr": ("optim.lr", ""),
    "actor_rollout_ref.actor.optim.weight_decay": ("optim.weight_decay", ""),
    "actor_rollout_ref.actor.optim.lr_warmup_steps": ("optim.warmup_steps", ""),
    "actor_rollout_ref.actor.grad_clip": ("optim.max_grad_norm", ""),
    "actor_rollout_ref.actor.clip_ratio": ("algorithm.clip_low", "and algorithm.clip_high"),
    "actor_rollout_ref.actor.clip_ratio_low": ("algorithm.clip_low", ""),
    "actor_rollout_ref.actor.clip_ratio_high": ("algorithm.clip_high", ""),
    "actor_rollout_ref.actor.clip_ratio_c": ("algorithm.clip_c", ""),
    "actor_rollout_ref.actor.use_kl_loss": ("algorithm.beta", "beta > 0 turns the KL loss on"),
    "actor_rollout_ref.actor.kl_loss_coef": ("algorithm.beta", ""),
    "actor_rollout_ref.actor.kl_loss_type": (
        "algorithm.kl_kind",
        "verl's low_var_kl = k3, kl = k1, mse = k2",
    ),
    "actor_rollout_ref.actor.entropy_coeff": ("algorithm.entropy_coef", ""),
    "actor_rollout_ref.actor.loss_agg_mode": ("algorithm.agg", ""),
    "actor_rollout_ref.actor.ppo_epochs": ("algorithm.mu", ""),
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": ("batch.micro_batch_size", ""),
    "actor_rollout_ref.actor.ppo_mini_batch_size": (
        "batch.prompts_per_step",
        "aha makes one update per batch (algorithm.mu passes)",
    ),
    "actor_rollout_ref.actor.policy_loss.loss_mode": (
        "algorithm.policy_loss",
        "vanilla = ppo_clip",
    ),
    "actor_rollout_ref.model.path": ("model.path", ""),
    "actor_rollout_ref.model.enable_gradient_checkpointing": ("model.gradient_checkpointing", ""),
    "actor_rollout_ref.model.lora_rank": ("model.lora.r", ""),
    "actor_rollout_ref.model.lora_alpha": ("model.lora.alpha", ""),
    "actor_rollout_ref.model.target_modules": ("model.lora.target_modules", ""),
    "actor_rollout_ref.model.trust_remote_code": ("model.trust_remote_code", ""),
    "data.train_batch_size": ("batch.prompts_per_step", ""),
    "data.max_prompt_length": (
        "memory.prompt_tokens",
        "aha does not cut prompts; this is the prompt length the memory plan assumes",
    ),
    "data.max_response_length": ("sampling.max_new_tokens", ""),
    "data.train_files": ("task.options", "task.name=parquet task.options.path=FILE"),
    "data.val_files": ("task.options", "the held-out evaluation reads the task's test split"),
    "data.prompt_key": ("task.options", "the task's question column: task.options.question=COLUMN"),
    "data.seed": ("seed", ""),
    "algorithm.adv_estimator": (
        "algorithm.advantage",
        "verl's reinforce_plus_plus = reinforce++, reinforce_plus_plus_baseline = reinforce++_baseline",
    ),
    "algorithm.norm_adv_by_std_in_grpo": ("algorithm.std_scale", "false = none"),
    "algorithm.use_kl_in_reward": ("algorithm.reward_kl_coef", "a coefficient > 0 turns it on"),
    "algorithm.kl_ctrl.kl_coef": ("algorithm.reward_kl_coef", ""),
    "algorithm.kl_ctrl.type": ("algorithm.kl_ctrl", ""),
    "algorithm.kl_ctrl.target_kl": ("algorithm.kl_target", ""),
    "algorithm.kl_ctrl.horizon": ("algorithm.kl_horizon", ""),
    "algorithm.kl_penalty": ("algorithm.kl_kind", ""),
    "algorithm.filter_groups.enable": ("algorithm.dynamic_sampling", ""),
    "algorithm.filter_groups.max_num_gen_batches": ("algorithm.max_resample_rounds", ""),
    "critic.optim.lr": ("algorithm.value_lr", ""),
    "critic.model.path": ("algorithm.value_model_path", ""),
    "critic.cliprange_value": ("algorithm.value_clip", ""),
    "reward_model.overlong_buffer.enable": ("algorithm.overlong_penalty", ""),
    "reward_model.overlong_buffer.len": ("algorithm.overlong_cache", ""),
    "trainer.total_training_steps": ("steps", ""),
    "trainer.total_epochs": ("steps", "aha counts steps"),
    "trainer.save_freq": ("checkpoint.save_every", ""),
    "trainer.test_freq": ("logging.eval_every", ""),
    "trainer.default_local_dir": ("out", ""),
    "trainer.project_name": ("logging.wandb_project", ""),
    "trainer.experiment_name": ("out", "the W&B run is named after the run directory"),
    "trainer.logger": ("logging.wandb", "logging.wandb=true or logging.tensorboard=true"),
    "trainer.resume_mode": ("resume", ""),
}


# `aha sft` (SFTConfig) reads some of the same TRL names differently: these win there
SFT_ALIASES: dict[str, tuple[str, str]] = {
    "per_device_train_batch_size": ("batch.micro_batch_size", "rows per forward/backward"),
    "gradient_accumulation_steps": (
        "batch.batch_size",
        "examples per optimizer step; aha accumulates batch_size / micro_batch_size micro-batches",
    ),
    "max_seq_length": ("data.max_length", ""),
}


def flatten(value, prefix: str) -> list[str]:
    """Dotted paths of the leaves under `prefix` (a nested mapping as verl's YAML writes it)."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in flatten(v, f"{prefix}.{k}")]
    return [prefix]


def lookup(relative_paths: list[str], sft: bool = False) -> tuple[str, str, str] | None:
    """The first alias among candidate foreign paths -> (foreign key, aha key, note).

    A path matches an alias written in full, by its last part (TRL's flat names), or as the tail of a nested
    verl name (`kl_loss_coef` or `actor.kl_loss_coef` for `actor_rollout_ref.actor.kl_loss_coef`): users
    quote verl's leaf names without their section. Tails are matched only when the last part is a
    distinctive snake_case name, so generic leaves (`n`, `lr`, `path`, `enable`) are not guessed at."""
    table = {**ALIASES, **SFT_ALIASES} if sft else ALIASES
    for path in relative_paths:
        last = path.rsplit(".", 1)[-1]
        for cand in (path, last):
            if cand in table:
                return (path, *table[cand])
        if "_" in last:
            for tail in (path, last):
                hit = next((k for k in table if k.endswith("." + tail)), None)
                if hit is not None:
                    return (path, *table[hit])
    return None


def key_paths(cls, prefix: str = "") -> list[str]:
    """Every dotted key (sections and leaves) of config class `cls`, depth first."""
    out = []
    for name, tp in typing.get_type_hints(cls).items():
        if name not in {f.name for f in dataclasses.fields(cls) if f.init}:
            continue
        out.append(prefix + name)
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        sub = next((a for a in args if dataclasses.is_dataclass(a)), None)
        if sub is not None and typing.get_origin(tp) is not list:
            out += key_paths(sub, f"{prefix}{name}.")
    return out
