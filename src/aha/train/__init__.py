"""Training: the RL stage (GRPO and its variants, PPO), the SFT stage, and the run machinery they share.

    train(cfg)   `aha train`: GRPOTrainer, or PPOTrainer when cfg.algorithm.name == "ppo" (build, fit, close)

Submodules: config (TrainConfig), grpo, ppo, sft (+ sft_config), loop (checkpoints, resume, signals, logging),
update (the policy update), forward (the training forward), batching, prompts, metrics, optim, checkpoint, dist.
"""

from __future__ import annotations


def train(cfg) -> dict:
    """Run the RL stage `cfg` (a TrainConfig): GRPO, or PPO with algorithm.name=ppo; returns fit()'s summary."""
    if cfg.algorithm.name == "ppo":
        from .ppo import train as run
    else:
        from .grpo import train as run
    return run(cfg)
