"""`aha eval CONFIG [key=value ...]` (or `aha eval --model PATH --task NAME --k 16`): the eval stage.

    load model + tokenizer -> engine -> evaluate_task (the task split's first `limit` rows) -> OUT/results.json,
    OUT/samples.jsonl, OUT/config.yaml, OUT/report/index.html

EvalConfig is the held-out evaluation every command shares (aha.schema.HeldOutConfig: k, limit, sampling with
the R1 paper's temperature 0.6 / top-p 0.95, batch_size, n_boot, reflection_phrases) plus what to evaluate: the
model, the task (the training config's task section, so a run's task block pastes here unchanged; task.split
defaults to test), the engine and the output directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import check, to_dict
from ..schema import ENGINES, HeldOutConfig, ModelConfig, TaskConfig

__all__ = ["EvalConfig", "run_eval"]


@dataclass
class EvalConfig(HeldOutConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)  # task.split: null = test
    # auto: fast engine on GPU when available, else HF
    engine: Literal["auto", "hf", "fast"] = "auto"
    out: str = "runs/eval"  # results.json, samples.jsonl, config.yaml, report/ go here
    report: bool = True  # also write OUT/report/index.html

    def __post_init__(self):
        super().__post_init__()
        check(
            self.limit is None or self.limit >= 1,
            "limit",
            f"must be >= 1 or null (all rows), got {self.limit}",
        )
        check(
            self.engine in ENGINES,
            "engine",
            f"got {self.engine!r}; choose one of: {', '.join(ENGINES)}",
        )
        check(
            bool(str(self.out).strip()),
            "out",
            "is empty; give an output directory, e.g. out=runs/eval",
        )
        check(self.sampling.max_new_tokens is not None, "sampling.max_new_tokens", "must be >= 1")
        check(self.sampling.seed is not None, "sampling.seed", "give an integer seed, e.g. 0")
        self.model.check_inference("eval")
        self.task.split = self.task.split or "test"


def run_eval(cfg: EvalConfig, log=print):
    """Evaluate cfg.model on cfg.task as configured; writes into cfg.out and returns the EvalResult."""
    import yaml

    from ..rollout.factory import make_engine
    from .held_out import evaluate_task
    from .report import make_report

    task = cfg.task.build()  # before the model: a wrong task option fails fast
    size = len(task.dataset(cfg.task.split))
    n = size if cfg.limit is None else min(cfg.limit, size)
    model, tok = cfg.model.load(seed=cfg.sampling.seed)
    model.eval()
    engine = make_engine(cfg.engine, model, tok)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    log(
        f"eval: {cfg.model.path} on {task.name}/{cfg.task.split}: {n} problems x k={cfg.k} "
        f"({type(engine).__name__}, accuracy reward '{task.accuracy_reward}')"
    )
    result = evaluate_task(
        engine, tok, cfg.task, cfg, seed=cfg.sampling.seed, built=task, out_dir=out, log=log
    )
    if cfg.report:
        make_report(out)
    log(result.summary())
    return result
