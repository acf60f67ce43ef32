"""Rejection sampling (`aha sample CONFIG`): verified, readable traces from a model, as an SFT dataset.

R1 (section 2.3.3): from the RL checkpoint, sample k responses per prompt, keep only the correct ones, and
filter out "chain-of-thought with mixed languages, long paragraphs, and code blocks". Here, per completion,
in this order (the first failing check is the reason counted in stats.json):

    truncated   hit max_new_tokens                                  (filters.drop_truncated)
    wrong       verifier reward < min_reward, or not applicable     (verifier: the task's accuracy reward)
    format      format reward != 1                                  (filters.require_format)
    readability language_consistency(reasoning, lang) < min_language (reasoning without words passes),
                a paragraph longer than max_paragraph_chars, a ``` code fence (filters.*)
then per prompt: drop duplicates (whitespace-normalised text) and keep up to m (the first, or the shortest).

Rows written to OUT/data.jsonl: the task row's fields + {prompt, completion} (loadable by `aha sft`) + provenance
{model, step, reward, format, language, prompt_index, sample, task, temperature}. Any Engine works: the local
model, or a teacher behind an OpenAI-compatible server (engine=openai; its requests are cached in
OUT/requests.jsonl). Output is resumable: prompts are processed in chunks, and a chunk's rows and then its
entry in OUT/progress.jsonl are appended and fsynced; a restarted run drops rows of unfinished chunks and
continues with the next one, so nothing is duplicated and, with the same seed, the file equals an
uninterrupted run's. The engine and the resumable files live in sample_io.py; this file holds the config,
the filters and the run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .config import ConfigError, check, to_dict
from .rewards.text import reasoning_of
from .sample_io import ResumableWriter, build_engine, checkpoint_step
from .train.config import ModelConfig, TaskConfig


@dataclass
class OpenAIConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""  # the served model name
    api: Literal["completions", "chat"] = (
        "completions"  # chat: use task.template="{prompt}" (bare question)
    )
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key ("" = none)
    concurrency: int = 8
    timeout: float = 300.0
    max_retries: int = 5
    backoff: float = 1.0
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
    system: str | None = None

    def __post_init__(self):
        from .rollout.openai_client.engine import OWN_FIELDS

        clash = sorted(set(self.extra_body) & set(OWN_FIELDS))
        check(not clash, "extra_body", f"may not set {', '.join(clash)}: sampling.* sets them")


@dataclass
class FilterConfig:
    drop_truncated: bool = True
    require_format: bool = True  # one <think> block then one <answer> block (format reward 1)
    language: str | None = "en"  # target language of the reasoning; null = no language filter
    min_language: float = 0.95
    max_paragraph_chars: int = 2000  # 0 = off
    no_code_blocks: bool = True  # R1 drops code blocks in math reasoning; turn off for code tasks

    def __post_init__(self):
        check(
            0 <= self.min_language <= 1,
            "min_language",
            f"must be in [0, 1], got {self.min_language}",
        )
        check(self.max_paragraph_chars >= 0, "max_paragraph_chars", "must be >= 0 (0 = off)")


@dataclass
class SampleSamplingConfig:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 1024
    seed: int = 0


@dataclass
class SampleConfig:
    model: ModelConfig = field(
        default_factory=ModelConfig
    )  # the sampled model (engine=openai: its tokenizer)
    engine: Literal["auto", "hf", "fast", "openai"] = "auto"
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    split: Literal["train", "test"] = "train"
    start: int = 0  # first row of the split
    num_prompts: int = 100
    k: int = 8  # samples per prompt
    m: int = 2  # kept per prompt (0 = every accepted, deduplicated sample)
    sampling: SampleSamplingConfig = field(default_factory=SampleSamplingConfig)
    verifier: str = "accuracy"  # reward name; accuracy = the task's verifier
    min_reward: float = 1.0
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedupe: bool = True
    prefer: Literal["first", "shortest"] = "first"
    prompts_per_call: int = 16  # prompts per engine.generate call (a resumable chunk)
    reward_timeout: float = 5.0
    reward_workers: int = 2
    out: str = "runs/sample"
    progress: bool = True

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


# ---- filters (pure) ---------------------------------------------------------------------------------------------
def readability(text: str, f: FilterConfig) -> tuple[str | None, float | None]:
    """(reason the text is rejected or None, language consistency or None when not measured)."""
    lang = None
    if f.language:
        from .rewards import language_consistency

        reasoning = reasoning_of(text)
        if any(ch.isalpha() for ch in reasoning):  # digits and symbols only: nothing to judge
            lang = language_consistency(text, f.language)
            if lang < f.min_language:
                return "language", lang
    if f.max_paragraph_chars and any(
        len(p) > f.max_paragraph_chars for p in re.split(r"\n\s*\n", text)
    ):
        return "long_paragraph", lang
    if f.no_code_blocks and "```" in text:
        return "code_block", lang
    return None, lang


def select(
    texts: list[str],
    truncated: list[bool],
    reward: np.ndarray,
    fmt: np.ndarray,
    cfg: SampleConfig,
    lengths: list[int],
) -> tuple[list[int], dict, list[float | None]]:
    """One prompt's k samples -> (kept indices, rejection counts, language scores). reward/fmt: (k,), NaN = n/a."""
    counts = {
        "truncated": 0,
        "wrong": 0,
        "format": 0,
        "language": 0,
        "long_paragraph": 0,
        "code_block": 0,
        "duplicate": 0,
        "over_m": 0,
    }
    ok, seen, langs = [], set(), []
    for j, text in enumerate(texts):
        reason, lang = None, None
        if cfg.filters.drop_truncated and truncated[j]:
            reason = "truncated"
        elif not (np.isfinite(reward[j]) and reward[j] >= cfg.min_reward):
            reason = "wrong"
        elif cfg.filters.require_format and not (np.isfinite(fmt[j]) and fmt[j] >= 1.0):
            reason = "format"
        else:
            reason, lang = readability(text, cfg.filters)
        langs.append(lang)
        key = " ".join(text.split())
        if reason is None and cfg.dedupe and key in seen:
            reason = "duplicate"
        if reason is not None:
            counts[reason] += 1
            continue
        seen.add(key)
        ok.append(j)
    if cfg.prefer == "shortest":
        ok.sort(key=lambda j: (lengths[j], j))
    if cfg.m and len(ok) > cfg.m:
        counts["over_m"] += len(ok) - cfg.m
        ok = sorted(ok[: cfg.m])
    return ok, counts, langs


# ---- the run --------------------------------------------------------------------------------------------------------
def sample(cfg: SampleConfig, engine=None, tokenizer=None, model_name: str | None = None) -> dict:
    """Run rejection sampling as configured (an engine may be passed in); returns the stats (also in stats.json)."""
    import yaml

    from .data import get_task, render_prompt
    from .rewards import RewardRunner
    from .rollout import SamplingParams

    out = Path(cfg.out)
    writer = ResumableWriter(out)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    task = get_task(cfg.task.name, **cfg.task.options)
    data = task.dataset(cfg.split)
    if cfg.start >= len(data):
        raise ConfigError(
            "start",
            f"the {cfg.split} split has {len(data)} rows; start={cfg.start} is past its end",
        )
    indices = range(cfg.start, min(cfg.start + cfg.num_prompts, len(data)))
    todo = [i for i in indices if i not in writer.done]
    if todo:
        if engine is None:
            engine, tokenizer, model_name = build_engine(cfg)
        step = checkpoint_step(cfg.model.path) if cfg.engine != "openai" else None
        verifier = task.accuracy_reward if cfg.verifier == "accuracy" else cfg.verifier
        t = cfg.task
        runner = RewardRunner(
            [(verifier, 1.0), ("format", 1.0)],
            timeout=cfg.reward_timeout,
            num_workers=cfg.reward_workers,
            think_prefilled=t.prefill.strip().startswith("<think>"),
        )
        from tqdm import tqdm

        bar = tqdm(
            total=len(indices),
            initial=len(indices) - len(todo),
            disable=not cfg.progress,
            desc="sample",
        )
        try:
            for c0 in range(0, len(todo), cfg.prompts_per_call):
                chunk = todo[c0 : c0 + cfg.prompts_per_call]
                rows = [data[i] for i in chunk]
                texts = [
                    render_prompt(
                        r["question"],
                        t.template,
                        tokenizer=tokenizer,
                        system=t.system,
                        prefill=t.prefill,
                    )
                    for r in rows
                ]
                s = cfg.sampling
                params = SamplingParams(
                    n=cfg.k,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    top_k=s.top_k,
                    max_tokens=s.max_new_tokens,
                    stop_token_ids=[tokenizer.eos_token_id],
                    seed=s.seed * 1_000_003 + chunk[0],
                )  # fixed by the chunk: resumes reproduce
                comps = engine.generate(
                    [tokenizer(x, add_special_tokens=False).input_ids for x in texts], params
                )
                scored = runner.score(
                    [c.text for c in comps], [rows[c.prompt_index] for c in comps]
                )
                kept, stats = (
                    [],
                    {"prompts": len(chunk), "samples": len(comps), "kept": 0, "prompts_kept": 0},
                )
                for p, (i, row) in enumerate(zip(chunk, rows)):
                    mine = comps[p * cfg.k : (p + 1) * cfg.k]
                    reward, fmt = (
                        scored.scores[p * cfg.k : (p + 1) * cfg.k, 0],
                        scored.scores[p * cfg.k : (p + 1) * cfg.k, 1],
                    )
                    keep, counts, langs = select(
                        [c.text for c in mine],
                        [c.finish_reason == "length" for c in mine],
                        reward,
                        fmt,
                        cfg,
                        [len(c.token_ids) for c in mine],
                    )
                    for key, v in counts.items():
                        stats[key] = stats.get(key, 0) + v
                    stats["kept"] += len(keep)
                    stats["prompts_kept"] += bool(keep)
                    kept += [
                        {
                            **row,
                            "prompt": texts[p],
                            "completion": mine[j].text,
                            "model": model_name,
                            "step": step,
                            "reward": float(reward[j]),
                            "format": _num(fmt[j]),
                            "language": langs[j],
                            "prompt_index": i,
                            "sample": j,
                            "task": task.name,
                            "temperature": s.temperature,
                            "n_tokens": len(mine[j].token_ids),
                        }
                        for j in keep
                    ]
                writer.commit(chunk, kept, stats)
                bar.update(len(chunk))
        finally:
            bar.close()
            runner.close()
    totals = writer.totals()
    totals["accept_rate"] = totals.get("kept", 0) / max(totals.get("samples", 0), 1)
    (out / "stats.json").write_text(json.dumps(totals, indent=1))
    return totals


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def cmd_sample(args: list[str]) -> int:
    """`aha sample CONFIG [key.sub=value ...]`."""
    from .cli_args import split_args
    from .config import load_config

    path, overrides = split_args(args)
    cfg = load_config(SampleConfig, path, overrides)
    stats = sample(cfg)
    print(
        f"kept {stats.get('kept', 0)} of {stats.get('samples', 0)} samples "
        f"({stats.get('prompts_kept', 0)}/{stats.get('prompts', 0)} prompts) -> {Path(cfg.out) / 'data.jsonl'}"
    )
    return 0
