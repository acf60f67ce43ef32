"""aha: the DeepSeek-R1 training recipe (R1-Zero GRPO, R1, distillation, PPO) as a small library and CLI."""

__version__ = "0.1.0"
