"""Generation engines behind one protocol: `engine.generate(prompt_token_ids, SamplingParams) -> list[Completion]`."""

from .base import Completion, Engine, SamplingParams
from .fast import FastEngine
from .hf import HFEngine

__all__ = ["Completion", "Engine", "SamplingParams", "HFEngine", "FastEngine"]
