"""The one generation interface every part of aha uses (training rollouts, rejection sampling, eval).

    engine.generate(prompt_token_ids: list[list[int]], params: SamplingParams) -> list[Completion]

The result is prompt-major: len(prompts) * params.n completions, all n samples of prompt 0 first.
`Completion.logprobs[t]` is log_softmax(logits / temperature)[token_ids[t]] of the distribution that was
sampled from (before top-p/top-k truncation); at temperature 0 decoding is greedy and the logprob is the
unscaled log_softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt (GRPO's G)
    temperature: float = 1.0  # 0 -> greedy
    top_p: float = 1.0  # nucleus mass kept, (0, 1]
    top_k: int = 0  # 0 -> off
    max_tokens: int = 256  # new tokens per completion
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None  # same seed, same inputs -> same samples (on one device)

    def __post_init__(self):
        # Accept a list for stop ids but keep the dataclass hashable.
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"SamplingParams.max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def logprob_temperature(self) -> float:
        """What the logits behind Completion.logprobs are divided by: the temperature, 1 when greedy (0)."""
        return self.temperature if self.temperature > 0 else 1.0


@dataclass
class Completion:
    prompt_index: int  # index into the prompt list given to generate()
    token_ids: list[int]  # generated tokens, the stop token included when one was hit
    logprobs: list[float]  # one per generated token (see module docstring)
    text: str = ""  # decoded token_ids, special tokens skipped
    finish_reason: Literal["stop", "length"] = "length"
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    def generate(
        self, prompt_token_ids: list[list[int]], params: SamplingParams
    ) -> list[Completion]: ...
