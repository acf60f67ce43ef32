"""`aha eval CONFIG [key=value ...]` (or `aha eval --model PATH --task NAME --k 16`): the eval stage.

    load model + tokenizer -> engine -> task split (first `limit` rows) -> evaluate() -> OUT/results.json,
    OUT/samples.jsonl, OUT/config.yaml, OUT/report/index.html

The defaults are the R1 paper's eval sampling (temperature 0.6, top-p 0.95). The task section has the same
keys as the training config's, so a run's task block can be pasted here unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..config import check as _check
from ..rollout.factory import ENGINES

__all__ = ["EvalConfig", "EvalModelConfig", "EvalTaskConfig", "EvalSamplingConfig", "run_eval"]


@dataclass
class EvalModelConfig:
    path: str = "tiny-base"  # local HF directory, hub id, "tiny-base" / "tiny-recheck" (shipped), "tiny-random"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = (
        "auto"  # auto: bf16 on GPU, fp32 on CPU
    )
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    trust_remote_code: bool = False

    def __post_init__(self):
        _check(
            bool(self.path.strip()),
            "path",
            "is empty; pass --model PATH or model.path=DIR_OR_HUB_ID",
        )


@dataclass
class EvalTaskConfig:
    name: str = "countdown"  # a registered task (aha.data), e.g. countdown, gsm8k, math, jsonl
    options: dict = field(default_factory=dict)  # passed to the task, e.g. {path: test.jsonl}
    split: str = "test"
    template: str = "r1-zero"  # r1-zero | chat | plain | a custom string containing {prompt}
    system: str | None = None  # system prompt for template=chat
    prefill: str = ""  # assistant prefill, e.g. "<think>"

    def __post_init__(self):
        _check(bool(self.name.strip()), "name", "is empty; name a task, e.g. task.name=countdown")
        _check(
            self.split in ("train", "test"), "split", f"got {self.split!r}; choose train or test"
        )


@dataclass
class EvalSamplingConfig:
    temperature: float = 0.6  # R1 paper eval setting; 0 = greedy (then use k=1)
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 1024
    seed: int = 0

    def __post_init__(self):
        _check(
            self.temperature >= 0,
            "temperature",
            f"must be >= 0 (0 = greedy), got {self.temperature}",
        )
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        _check(
            self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}"
        )


@dataclass
class EvalConfig:
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    task: EvalTaskConfig = field(default_factory=EvalTaskConfig)
    sampling: EvalSamplingConfig = field(default_factory=EvalSamplingConfig)
    k: int = 4  # samples per problem: pass1 = mean over them, cons@k, pass@j for j <= k
    limit: int | None = None  # evaluate the first `limit` rows of the split (None = all)
    engine: Literal["auto", "hf", "fast"] = (
        "auto"  # auto: fast engine on GPU when available, else HF
    )
    batch_size: int = 32  # problems per generate call (each with k samples)
    out: str = "runs/eval"  # results.json, samples.jsonl, config.yaml, report/ go here
    n_boot: int = 1000  # bootstrap resamples for the intervals (0 = none)
    reflection_phrases: list[str] | None = None  # None = aha.eval.reflection.DEFAULT_PHRASES
    report: bool = True  # also write OUT/report/index.html

    def __post_init__(self):
        _check(self.k >= 1, "k", f"samples per problem must be >= 1, got {self.k}")
        _check(
            self.limit is None or self.limit >= 1,
            "limit",
            f"must be >= 1 or null (all rows), got {self.limit}",
        )
        _check(
            self.engine in ENGINES,
            "engine",
            f"got {self.engine!r}; choose one of: {', '.join(ENGINES)}",
        )
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.n_boot >= 0, "n_boot", f"must be >= 0 (0 = no intervals), got {self.n_boot}")
        _check(
            bool(str(self.out).strip()),
            "out",
            "is empty; give an output directory, e.g. out=runs/eval",
        )
        _check(
            self.reflection_phrases is None or any(p.strip() for p in self.reflection_phrases),
            "reflection_phrases",
            "is empty; give phrases such as [wait, verify] or null for the defaults",
        )


def run_eval(cfg: EvalConfig, log=print):
    """Evaluate cfg.model on cfg.task as configured; writes into cfg.out and returns the EvalResult."""
    import yaml

    from aha.data import get_task
    from aha.models.load import load_model

    from .evaluate import evaluate
    from .report import make_report

    task = get_task(cfg.task.name, **cfg.task.options)
    data = task.dataset(cfg.task.split)
    n = len(data) if cfg.limit is None else min(cfg.limit, len(data))
    rows = [data[i] for i in range(n)]
    model, tok = load_model(
        cfg.model.path,
        device=cfg.model.device,
        dtype=cfg.model.dtype,
        trust_remote_code=cfg.model.trust_remote_code,
        seed=cfg.sampling.seed,
    )
    model.eval()
    from ..rollout.factory import make_engine

    engine = make_engine(cfg.engine, model, tok)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    log(
        f"eval: {cfg.model.path} on {task.name}/{cfg.task.split}: {n} problems x k={cfg.k} "
        f"({type(engine).__name__}, accuracy reward '{task.accuracy_reward}')"
    )
    s = cfg.sampling
    result = evaluate(
        engine,
        tok,
        rows,
        accuracy=task.accuracy_reward,
        k=cfg.k,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        max_tokens=s.max_new_tokens,
        template=cfg.task.template,
        system=cfg.task.system,
        prefill=cfg.task.prefill,
        batch_size=cfg.batch_size,
        seed=s.seed,
        phrases=cfg.reflection_phrases,
        n_boot=cfg.n_boot,
        out_dir=out,
        log=log,
    )
    if cfg.report:
        make_report(out)
    log(result.summary())
    return result
