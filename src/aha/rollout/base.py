"""The one generation interface every part of aha uses (training rollouts, rejection sampling, eval, serving).

    engine.generate(prompt_token_ids: list[list[int]], params: SamplingParams, on_tokens=None) -> list[Completion]

The result is prompt-major: len(prompts) * params.n completions, all n samples of prompt 0 first.
`Completion.logprobs[t]` is log_softmax(logits / temperature)[token_ids[t]] of the distribution that was
sampled from (before top-p/top-k truncation); at temperature 0 decoding is greedy and the logprob is the
unscaled log_softmax.

Stopping (OpenAI / vLLM semantics). A completion ends at the first of:
- a token in `stop_token_ids` (kept in token_ids; finish_reason "stop");
- a token after which the decoded completion text (special tokens skipped) contains a string of `stop`:
  token_ids/logprobs keep the tokens up to and including that one (what the model really generated), `text`
  is cut just before the stop string (just after it with include_stop_str_in_output), `meta["stop"]` is the
  string; when several strings appear at that token the one that starts first in the text wins (ties: the
  one listed first); finish_reason "stop";
- max_tokens tokens (finish_reason "length");
- its `on_tokens` callback returning False (finish_reason "abort", the tokens delivered so far).

Streaming: `on_tokens(i, new_token_ids)` is called with the newly generated tokens of completion i (the
prompt-major index, i = prompt_index * n + sample) as soon as the engine's host side knows them, in order;
the concatenation of its calls for i equals completion i's final token_ids (tokens after a stop string's
completing token are never delivered). Returning False aborts completion i (it stops generating; the other
completions are unaffected, and with a fixed seed sample exactly what they would have sampled anyway).
How often it is called is the engine's business (see each engine's docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

OnTokens = Callable[[int, list[int]], "bool | None"]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt (GRPO's G)
    temperature: float = 1.0  # 0 -> greedy
    top_p: float = 1.0  # nucleus mass kept, (0, 1]
    top_k: int = 0  # 0 -> off
    max_tokens: int = 256  # new tokens per completion
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None  # same seed, same inputs -> same samples (on one device)
    stop: tuple[str, ...] = ()  # stop strings (see the module docstring)
    include_stop_str_in_output: bool = False

    def __post_init__(self):
        # Accept lists (and one string for `stop`, as the OpenAI API does) but keep the dataclass hashable.
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"SamplingParams.stop must be non-empty strings, got {stop!r}")
        object.__setattr__(self, "stop", stop)
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
    token_ids: list[
        int
    ]  # generated tokens, the stop token (or a stop string's last token) included
    logprobs: list[float]  # one per generated token (see module docstring)
    text: str = ""  # decoded token_ids, special tokens skipped, cut at a stop string
    finish_reason: Literal["stop", "length", "abort"] = "length"
    meta: dict = field(default_factory=dict)  # "stop": the stop string that ended it


@runtime_checkable
class Engine(Protocol):
    def generate(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        on_tokens: OnTokens | None = None,
    ) -> list[Completion]: ...
