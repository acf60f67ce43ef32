"""Generation engines behind one protocol: `engine.generate(prompt_token_ids, SamplingParams) -> list[Completion]`.

The engines import torch, so they load when first named (`from aha.rollout import FastEngine`): code that needs
only the protocol's types (config checks, the OpenAI client) stays free of it."""

from .base import Completion, Engine, SamplingParams

__all__ = ["Completion", "Engine", "SamplingParams", "HFEngine", "FastEngine"]


def __getattr__(name: str):
    if name == "FastEngine":
        from .fast import FastEngine

        return FastEngine
    if name == "HFEngine":
        from .hf import HFEngine

        return HFEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
