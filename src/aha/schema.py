"""The config sections every command shares, one class per concept (`aha train`, `sft`, `sample`, `eval`,
`demo` and the pipelines all use them; a command with other defaults declares them with aha.config.section):

    ModelConfig     which weights, how to load them, and LoRA when training      .load(seed) -> (model, tok)
    TaskConfig      where rows come from and how a question becomes a prompt     .build() -> Task, no model
    SamplingConfig  how completions are drawn                                     .params(n, stop, seed)
    HeldOutConfig   one held-out evaluation: k samples on the first `limit` problems of a split

The temperature rule lives in SamplingConfig.params and SamplingParams.logprob_temperature: temperature 0 is
greedy decoding, whose logprobs are the unscaled log_softmax. The R1 paper's evaluation sampling (temperature
0.6, top-p 0.95) is stated once, here, as HeldOutConfig's default. Nothing heavy is imported at module level:
configs load and fail in one line before torch is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .config import check, section

ENGINES = ("auto", "hf", "fast")  # aha.rollout.factory.make_engine's kinds
EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95  # the R1 paper's evaluation sampling (section 3)


@dataclass
class LoraConfig:
    r: int = 0  # 0 = full fine-tuning
    alpha: int = 16  # LoRA scaling: the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the LoRA branch's input
    # the linear layers that get adapters
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    def __post_init__(self):
        check(self.r >= 0, "r", f"LoRA rank must be >= 0 (0 turns LoRA off), got {self.r}")


@dataclass
class ModelConfig:
    # local dir or hub id; "tiny-base" / "tiny-recheck" = models shipped with aha; "tiny-random" = a random 2-layer
    # Qwen2 on a character tokenizer (tests)
    path: str = "tiny-base"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # bf16 on GPU, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    gradient_checkpointing: bool | None = (
        None  # training only; null: the memory plan decides (off without)
    )
    lora: LoraConfig = field(default_factory=LoraConfig)  # training only
    # training only: torch.compile each decoder layer of the training forward (GPU; fuses the norms, rotary and
    # activations: the update ran 1.3-1.7x faster on an H200; the first steps pay ~1 min of compilation)
    compile: bool = False
    trust_remote_code: bool = False  # run the model repository's own Python code (transformers)
    # CPU threads of torch's intra-op pool (torch.set_num_threads); null = torch's default (all cores). On a
    # shared or busy machine fewer threads can be faster (README, "Threads")
    threads: int | None = None

    def __post_init__(self):
        check(bool(self.path.strip()), "path", "is empty; pass model.path=DIR_OR_HUB_ID")
        check(
            self.threads is None or self.threads >= 1,
            "threads",
            f"must be >= 1 or null (torch's default), got {self.threads}",
        )

    def apply_threads(self) -> None:
        """Set torch's intra-op thread count when model.threads says so (before any model work)."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)

    def check_inference(self, command: str) -> None:
        """For commands that only generate: the training-only keys would do nothing there."""
        bad = "model.lora.r" if self.lora.r else "model.compile" if self.compile else None
        check(
            bad is None and not self.gradient_checkpointing,
            bad or "model.gradient_checkpointing",
            f"is a training setting; `aha {command}` loads model.path as it is saved",
        )

    def load(self, *, seed: int, device: str | None = None, train: bool = False):
        """-> (model, tokenizer) on `device` (default: self.device); train=True adds LoRA and checkpointing."""
        from .models.load import load_model

        self.apply_threads()
        extra = {}
        if train:
            lo = self.lora
            extra = dict(
                gradient_checkpointing=self.gradient_checkpointing,
                compile_layers=self.compile,
                lora_r=lo.r,
                lora_alpha=lo.alpha,
                lora_dropout=lo.dropout,
                lora_target_modules=lo.target_modules,
            )
        return load_model(
            self.path,
            device=device or self.device,
            dtype=self.dtype,
            seed=seed,
            trust_remote_code=self.trust_remote_code,
            **extra,
        )


@dataclass
class TaskConfig:
    name: str = "countdown"  # a registered task (aha.data) or a file task (gsm8k, math, jsonl, ...)
    options: dict = field(default_factory=dict)  # passed to the task, e.g. {path: data.jsonl}
    template: str = "r1-zero"  # r1-zero | chat | plain | a custom string containing {prompt}
    system: str | None = None  # system prompt for template=chat
    prefill: str = ""  # assistant prefill, e.g. "<think>"
    # the split to draw from; null = the command's own (train: rollouts from train, held-out eval on test;
    # aha sample: train; aha eval: test)
    split: Literal["train", "test"] | None = None

    def __post_init__(self):
        check(bool(self.name.strip()), "name", "is empty; name a task, e.g. task.name=countdown")
        check(
            self.split in (None, "train", "test"),
            "split",
            f"got {self.split!r}; choose train or test",
        )

    @property
    def think_prefilled(self) -> bool:
        """Whether the prompt ends inside a <think> block (the format reward then expects no opening tag)."""
        return self.prefill.strip().startswith("<think>")

    def build(self):
        """The aha.data.Task (rows + the reward that verifies them); loads no model."""
        from .data import get_task

        return get_task(self.name, **self.options)

    def rows(self, split: str, limit: int | None = None, task=None) -> list[dict]:
        """The first `limit` rows of `split` (all when None), from `task` or a freshly built one."""
        data = (task or self.build()).dataset(split)
        n = len(data) if limit is None else min(limit, len(data))
        return [data[i] for i in range(n)]

    def render(self, question: str, tokenizer=None) -> str:
        """The prompt text of `question` under this task's template, system prompt and prefill."""
        from .data import render_prompt

        return render_prompt(
            question, self.template, tokenizer=tokenizer, system=self.system, prefill=self.prefill
        )


# a temperature in (0, GREEDY_BELOW) overflows logits / T: refused here, greedy in aha serve (vLLM's rule)
GREEDY_BELOW = 1e-5


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling: the smallest token set with this mass; 1 = off
    top_k: int = 0  # 0 = off
    # new tokens per completion; null (training's held-out evaluation only) = the run's sampling.max_new_tokens
    max_new_tokens: int | None = 256
    seed: int | None = None  # null = the run's seed
    # stop strings, OpenAI semantics: a completion ends where one appears and its text is cut before it (the
    # tokens up to the one completing it are kept for training); e.g. ["User:"] for an instruct model under
    # the raw r1-zero template. A stop string cut from the text is not seen by the rewards: to stop at
    # "</answer>" and still pay the format reward, set include_stop_str_in_output.
    stop: list[str] = field(default_factory=list)
    # keep the stop string that ended a completion in its text
    include_stop_str_in_output: bool = False

    def __post_init__(self):
        check(
            all(isinstance(x, str) and x for x in self.stop),
            "stop",
            f"stop strings must be non-empty strings, got {self.stop!r}",
        )
        check(
            self.temperature == 0 or self.temperature >= GREEDY_BELOW,
            "temperature",
            f"must be 0 (greedy) or >= 1e-5 (smaller ones overflow the logits), got {self.temperature}",
        )
        check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        check(self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        check(
            self.max_new_tokens is None or self.max_new_tokens >= 1,
            "max_new_tokens",
            f"must be >= 1, got {self.max_new_tokens}",
        )

    def params(self, n: int, stop_token_ids, seed: int | None):
        """The engine's SamplingParams for n samples per prompt (the engine reports logprobs at
        SamplingParams.logprob_temperature: the temperature, or 1 when greedy)."""
        from .rollout.base import SamplingParams

        if self.max_new_tokens is None:
            raise ValueError("sampling.max_new_tokens is unresolved; the command's config sets it")
        return SamplingParams(
            n=n,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_tokens=self.max_new_tokens,
            stop_token_ids=list(stop_token_ids),
            stop=tuple(self.stop),
            include_stop_str_in_output=self.include_stop_str_in_output,
            seed=seed,
        )


@dataclass
class HeldOutConfig:
    """One held-out evaluation (aha.eval.evaluate_task): k samples on each of the first `limit` problems."""

    k: int = 4  # samples per problem: pass1 = mean over them, cons@k, pass@j for j <= k
    limit: int | None = None  # the split's first `limit` rows; null = all, 0 = no evaluation
    sampling: SamplingConfig = section(
        SamplingConfig, temperature=EVAL_TEMPERATURE, top_p=EVAL_TOP_P, max_new_tokens=1024, seed=0
    )
    batch_size: int = 32  # problems per generate call (each with k samples)
    n_boot: int = 1000  # bootstrap resamples for the intervals (0 = none)
    reflection_phrases: list[str] | None = None  # None = aha.eval.reflection.DEFAULT_PHRASES
    # the lenient figures reported beside the strict ones (which read <answer> tags only): boxed (the last
    # \boxed{}), last-number, tags (= strict only), auto (the benchmark's own: boxed for math500/aime24/amc23,
    # last-number for gsm8k; strict only for other tasks). aha.rewards.answers
    answer: Literal["auto", "tags", "boxed", "last-number"] = "auto"

    def __post_init__(self):
        check(self.k >= 1, "k", f"samples per problem must be >= 1, got {self.k}")
        check(
            self.limit is None or self.limit >= 0,
            "limit",
            f"must be >= 0 (0 = no evaluation) or null (all rows), got {self.limit}",
        )
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.n_boot >= 0, "n_boot", f"must be >= 0 (0 = no intervals), got {self.n_boot}")
        check(
            self.reflection_phrases is None or any(p.strip() for p in self.reflection_phrases),
            "reflection_phrases",
            "is empty; give phrases such as [wait, verify] or null for the defaults",
        )

    @property
    def enabled(self) -> bool:
        return self.limit != 0
