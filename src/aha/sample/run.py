"""`sample(cfg)`: rejection sampling in resumable chunks of prompts (the method: aha.sample's docstring).

For each chunk of `prompts_per_call` prompts: render, generate k samples each, score them with the verifier and
the format reward, select per prompt (filters.py), then append the kept rows and the chunk's progress entry
(io.py). Sampling seeds are fixed by the chunk's first prompt, so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import ConfigError, as_today, config_changes, to_dict
from .config import SampleConfig
from .engine import build_engine
from .filters import select
from .io import ResumableWriter, checkpoint_step

# keys a rerun in the same out= may change: which prompts, how they are batched, run-time knobs
FREE = (
    "start",
    "num_prompts",
    "prompts_per_call",
    "reward_workers",
    "reward_timeout",
    "progress",
    "out",
    "model.device",
    "model.threads",
    "model.compile",
    "engine",
    "openai.concurrency",
    "openai.timeout",
    "openai.max_retries",
    "openai.backoff",
)


def sample(cfg: SampleConfig, engine=None, tokenizer=None, model_name: str | None = None) -> dict:
    """Run rejection sampling as configured (an engine may be passed in); returns the stats (also in stats.json)."""
    import yaml

    from ..rewards import RewardRunner

    out = Path(cfg.out)
    writer = ResumableWriter(out)
    saved = out / "config.yaml"
    if writer.done and saved.is_file():  # resuming: the rows there must come from the same settings
        old = as_today(type(cfg), yaml.safe_load(saved.read_text()) or {})
        changed = config_changes(old, to_dict(cfg), ignore=FREE)
        if changed:
            raise ConfigError(
                "out",
                f"{out} holds samples made with other settings ({changed}); a rerun there only adds prompts "
                f"(start, num_prompts): choose another out=DIR, or delete {out} to sample afresh",
            )
    saved.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    task = cfg.task.build()
    data = task.dataset(cfg.task.split)
    if cfg.start >= len(data):
        raise ConfigError(
            "start",
            f"the {cfg.task.split} split has {len(data)} rows; start={cfg.start} is past its end",
        )
    indices = range(cfg.start, min(cfg.start + cfg.num_prompts, len(data)))
    todo = [i for i in indices if i not in writer.done]
    if todo:
        if engine is None:
            engine, tokenizer, model_name = build_engine(cfg)
        cfg, too_long = fit_prompts(cfg, engine, tokenizer, data, indices)
        source = {
            "model": model_name,
            "step": checkpoint_step(cfg.model.path) if cfg.engine != "openai" else None,
            "task": task.name,
        }
        verifier = task.accuracy_reward if cfg.verifier == "accuracy" else cfg.verifier
        runner = RewardRunner(
            [(verifier, 1.0), ("format", 1.0)],
            timeout=cfg.reward_timeout,
            num_workers=cfg.reward_workers,
            think_prefilled=cfg.task.think_prefilled,
        )
        from tqdm import tqdm

        from ..progress import Heartbeat

        bar = tqdm(
            total=len(indices),
            initial=len(indices) - len(todo),
            disable=not cfg.progress,
            desc="sample",
        )
        # the bar moves once per chunk; between moves, a line every ~10 s says the run is alive, written
        # where the bar is (stderr), which tqdm clears and redraws around it (stdout would land mid-bar)
        say = (lambda line: bar.write(line, file=bar.fp)) if cfg.progress else None
        beat = Heartbeat("sample", say, status="the first chunk")
        try:
            with beat:
                for c0 in range(0, len(todo), cfg.prompts_per_call):
                    chunk = todo[c0 : c0 + cfg.prompts_per_call]
                    sampled = [i for i in chunk if i not in too_long]
                    rows, stats = run_chunk(cfg, engine, tokenizer, runner, sampled, data, source)
                    stats["prompts"] = len(chunk)
                    stats["too_long"] = len(chunk) - len(sampled)
                    writer.commit(chunk, rows, stats)
                    bar.update(len(chunk))
                    beat.update(f"{bar.n}/{bar.total} prompts done, sampling the next chunk")
        finally:
            bar.close()
            runner.close()
    totals = writer.totals()
    totals["accept_rate"] = totals.get("kept", 0) / max(totals.get("samples", 0), 1)
    (out / "stats.json").write_text(json.dumps(totals, indent=1))
    return totals


def fit_prompts(cfg: SampleConfig, engine, tokenizer, data, indices) -> tuple[SampleConfig, set]:
    """The run's prompts against the model's context (aha.eval.context, as `aha eval` does): -> (cfg with
    sampling.max_new_tokens lowered to what the longest kept prompt leaves, if it must be; the row indices
    skipped as too long). Computed over every prompt of the run, so a resumed run samples as an uninterrupted
    one. A served model (engine=openai) has no known context: nothing changes."""
    from dataclasses import replace

    from ..eval.context import fit_to_context, model_context

    context = model_context(engine)
    if context is None:
        return cfg, set()
    texts = [cfg.task.render(data[i]["question"], tokenizer) for i in indices]
    lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False).input_ids]
    want = cfg.sampling.max_new_tokens
    try:
        keep, fit = fit_to_context(lengths, want, context)
    except ValueError as e:
        raise ConfigError("task", str(e)) from None
    too_long = set(indices) - {indices[j] for j in keep}
    notes = []
    if too_long:
        notes.append(
            f"{len(too_long)} of {len(indices)} prompts skipped (too long for the model's {context}-token "
            "context; stats.json counts them as too_long)"
        )
    if fit < want:
        notes.append(
            f"sampling.max_new_tokens {want} -> {fit} so the longest kept prompt fits the {context}-token "
            "context"
        )
        cfg = replace(cfg, sampling=replace(cfg.sampling, max_new_tokens=fit))
    if notes:
        print("aha sample: " + "; ".join(notes))
    return cfg, too_long


def run_chunk(cfg: SampleConfig, engine, tokenizer, runner, chunk, data, source: dict):
    """Prompts `chunk` (row indices) -> (kept rows with provenance, the chunk's counts)."""
    from ..models.tokenizer import stop_token_ids  # transformers: not for `aha sample --help`

    if not chunk:  # every prompt of the chunk was too long for the context
        return [], {"prompts": 0, "samples": 0, "kept": 0, "prompts_kept": 0}
    k, s = cfg.k, cfg.sampling
    rows = [data[i] for i in chunk]
    texts = [cfg.task.render(r["question"], tokenizer) for r in rows]
    # the seed is fixed by the chunk's first prompt: a resumed run reproduces an uninterrupted one
    ends = list(
        stop_token_ids(tokenizer, getattr(engine, "model", None))
    )  # every end id of the model
    params = s.params(k, ends, seed=s.seed * 1_000_003 + chunk[0])
    comps = engine.generate(
        [tokenizer(x, add_special_tokens=False).input_ids for x in texts], params
    )
    scored = runner.score(
        [c.text for c in comps],
        [rows[c.prompt_index] for c in comps],
        completion_ids=[c.token_ids for c in comps],
    )
    kept = []
    stats = {"prompts": len(chunk), "samples": len(comps), "kept": 0, "prompts_kept": 0}
    for p, (i, row) in enumerate(zip(chunk, rows)):
        mine = comps[p * k : (p + 1) * k]
        reward, fmt = scored.scores[p * k : (p + 1) * k, 0], scored.scores[p * k : (p + 1) * k, 1]
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
                "model": source["model"],
                "step": source["step"],
                "reward": float(reward[j]),
                "format": _num(fmt[j]),
                "language": langs[j],
                "prompt_index": i,
                "sample": j,
                "task": source["task"],
                "temperature": s.temperature,
                "n_tokens": len(mine[j].token_ids),
            }
            for j in keep
        ]
    return kept, stats


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None
