"""Generation engines behind one protocol: `engine.generate(prompt_token_ids, SamplingParams) -> list[Completion]`."""
from .base import Completion, Engine, SamplingParams
from .hf import HFEngine
from .fast import FastEngine

__all__ = ["Completion", "Engine", "SamplingParams", "HFEngine"]
