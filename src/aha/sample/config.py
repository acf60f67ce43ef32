"""The config of `aha sample` (rejection sampling): which model and task, how many samples, which filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..config import check, section
from ..schema import ModelConfig, SamplingConfig, TaskConfig


@dataclass
class OpenAIConfig:
    base_url: str = "http://127.0.0.1:8000/v1"  # the server's OpenAI-compatible API
    model: str = ""  # the served model name
    # chat: use task.template="{prompt}" (bare question)
    api: Literal["completions", "chat"] = "completions"
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key ("" = none)
    concurrency: int = 8  # requests in flight at once
    timeout: float = 300.0  # seconds per request
    max_retries: int = 5  # retries of a failed request (429, 5xx, connection errors)
    backoff: float = 1.0  # seconds before the first retry, doubling after each
    send_token_ids: bool = False  # send prompt token ids (vLLM, SGLang, aha serve) instead of text
    vllm_extensions: bool = (
        True  # send top_k / stop_token_ids / return_token_ids (vLLM, not OpenAI)
    )
    logprobs: bool = (
        False  # ask for logprobs (DeepSeek's reasoner rejects the field; traces need none)
    )
    extra_body: dict = field(
        default_factory=dict
    )  # more request fields, e.g. {repetition_penalty: 1.05}
    system: str | None = None  # system message of api=chat requests

    def __post_init__(self):
        from ..rollout.openai_client.engine import OWN_FIELDS

        clash = sorted(set(self.extra_body) & set(OWN_FIELDS))
        check(not clash, "extra_body", f"may not set {', '.join(clash)}: sampling.* sets them")

    def engine(self, tokenizer, cache_path=None):
        """The OpenAIEngine these settings describe (the API key read from `api_key_env`); `cache_path` keeps
        answered requests so a resumed run does not pay for them twice."""
        import os

        from ..rollout.openai_client import OpenAIEngine

        return OpenAIEngine(
            self.base_url,
            self.model,
            tokenizer,
            api=self.api,
            api_key=os.environ.get(self.api_key_env) if self.api_key_env else None,
            concurrency=self.concurrency,
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff=self.backoff,
            send_token_ids=self.send_token_ids,
            vllm_extensions=self.vllm_extensions,
            logprobs=self.logprobs,
            extra_body=self.extra_body,
            system=self.system,
            cache_path=cache_path,
        )


@dataclass
class FilterConfig:
    drop_truncated: bool = True  # drop completions cut by max_new_tokens
    require_format: bool = True  # one <think> block then one <answer> block (format reward 1)
    language: str | None = "en"  # target language of the reasoning; null = no language filter
    min_language: float = 0.95  # least share of the reasoning's letters in `language`
    max_paragraph_chars: int = 2000  # 0 = off
    no_code_blocks: bool = True  # R1 drops code blocks in math reasoning; turn off for code tasks

    def __post_init__(self):
        from ..rewards.text import SCRIPTS

        check(
            self.language is None or self.language in SCRIPTS,
            "language",
            f"unknown language {self.language!r}; choose one of: {', '.join(SCRIPTS)} "
            "(or null for no language filter)",
        )
        check(
            0 <= self.min_language <= 1,
            "min_language",
            f"must be in [0, 1], got {self.min_language}",
        )
        check(self.max_paragraph_chars >= 0, "max_paragraph_chars", "must be >= 0 (0 = off)")


@dataclass
class SampleConfig:
    RENAMED: ClassVar[dict[str, str]] = {"split": "task.split"}

    model: ModelConfig = field(
        default_factory=ModelConfig
    )  # the sampled model (engine=openai: its tokenizer)
    # openai: a served model (the openai section)
    engine: Literal["auto", "hf", "fast", "openai"] = "auto"
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    start: int = 0  # first row of the split (task.split: null = train)
    num_prompts: int = 100  # prompts of the split sampled, from `start`
    k: int = 8  # samples per prompt
    m: int = 2  # kept per prompt (0 = every accepted, deduplicated sample)
    sampling: SamplingConfig = section(
        SamplingConfig, temperature=0.7, top_p=0.95, max_new_tokens=1024, seed=0
    )
    verifier: str = "accuracy"  # reward name; accuracy = the task's verifier
    min_reward: float = 1.0  # a sample is kept when its verifier reward is at least this
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedupe: bool = True  # drop a prompt's samples whose text repeats (whitespace aside)
    prefer: Literal["first", "shortest"] = "first"  # which accepted samples fill a prompt's m
    prompts_per_call: int = 16  # prompts per engine.generate call (a resumable chunk)
    reward_timeout: float = 5.0  # seconds per completion for the verifier
    reward_workers: int = 2  # processes that run the verifier
    out: str = "runs/sample"  # writes OUT/data.jsonl (SFT rows), stats.json
    progress: bool = True  # a progress bar

    def __post_init__(self):
        check(self.k >= 1, "k", f"samples per prompt must be >= 1, got {self.k}")
        check(self.m >= 0, "m", f"must be >= 0 (0 = keep all accepted), got {self.m}")
        check(self.num_prompts >= 1, "num_prompts", f"must be >= 1, got {self.num_prompts}")
        check(self.start >= 0, "start", f"must be >= 0, got {self.start}")
        check(
            self.prompts_per_call >= 1,
            "prompts_per_call",
            f"must be >= 1, got {self.prompts_per_call}",
        )
        check(
            self.engine != "openai" or bool(self.openai.model),
            "openai.model",
            "engine=openai needs the served model name, e.g. openai.model=deepseek-r1",
        )
        check(self.sampling.max_new_tokens is not None, "sampling.max_new_tokens", "must be >= 1")
        check(self.sampling.seed is not None, "sampling.seed", "give an integer seed, e.g. 0")
        self.model.check_inference("sample")
        self.task.split = self.task.split or "train"
