"""`aha eval CONFIG [key=value ...]` (or `aha eval --model PATH --task NAME --k 16`): the eval stage.

    load model + tokenizer -> engine -> evaluate_task (the task split's first `limit` rows) -> OUT/results.json,
    OUT/samples.jsonl, OUT/config.yaml, OUT/report/index.html

EvalConfig is the held-out evaluation every command shares (aha.schema.HeldOutConfig: k, limit, sampling with
the R1 paper's temperature 0.6 / top-p 0.95, batch_size, n_boot, reflection_phrases, answer) plus what to
evaluate: the model, the task (the training config's task section, so a run's task block pastes here
unchanged; task.split defaults to test), the engine and the output directory.

The R1 benchmarks are tasks (aha.data.benchmarks): `--task math500|gsm8k|aime24|amc23`; k defaults to each
one's own (benchmarks.K) and the lenient figure to its usual answer format (benchmarks.ANSWER). A served model
is evaluated with the same verifier through its OpenAI-compatible API: `--endpoint URL --model NAME` (engine
openai; only the tokenizer is loaded here, from --tokenizer or the model name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import check, to_dict
from ..sample.config import OpenAIConfig
from ..schema import ENGINES, HeldOutConfig, ModelConfig, TaskConfig

__all__ = ["EvalConfig", "run_eval"]


@dataclass
class EvalConfig(HeldOutConfig):
    # samples per problem; null = the benchmark's own (math500/gsm8k 4, aime24/amc23 16), else 4
    k: int | None = None
    model: ModelConfig = field(
        default_factory=ModelConfig
    )  # engine=openai: the served model's name
    task: TaskConfig = field(default_factory=TaskConfig)  # task.split: null = test
    # auto: fast engine on GPU when available, else HF; openai: a served model (endpoint)
    engine: Literal["auto", "hf", "fast", "openai"] = "auto"
    endpoint: str | None = (
        None  # base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1
    )
    tokenizer: str | None = None  # engine=openai: the served model's tokenizer; null = model.path
    openai: OpenAIConfig = field(
        default_factory=OpenAIConfig
    )  # engine=openai: the client's settings
    # results.json, samples.jsonl, config.yaml, report/ go here; null: runs/eval/MODEL-TASK (MODEL: the model
    # path's last part), so that evaluating another task or model does not overwrite the last one
    out: str | None = None
    report: bool = True  # also write OUT/report/index.html

    def __post_init__(self):
        if self.k is None:
            from ..data.benchmarks import K

            self.k = K.get(self.task.name, 4)
        # before the shared section's check, whose ">= 0 (0 = no evaluation)" is the training loop's meaning
        check(
            self.limit is None or self.limit >= 1,
            "limit",
            f"must be >= 1 or null (all rows), got {self.limit}",
        )
        super().__post_init__()
        check(
            self.engine in (*ENGINES, "openai"),
            "engine",
            f"got {self.engine!r}; choose one of: {', '.join(ENGINES)}, openai",
        )
        if self.endpoint is not None:
            check(
                self.endpoint.startswith(("http://", "https://")),
                "endpoint",
                f"got {self.endpoint!r}; give the API's URL, e.g. http://127.0.0.1:8000/v1",
            )
            check(
                self.engine in ("auto", "openai"),
                "engine",
                f"is {self.engine} but an endpoint is given; drop one of them",
            )
            self.engine, self.openai.base_url = "openai", self.endpoint
        if self.engine == "openai":
            self.openai.model = self.openai.model or self.model.path
        if self.out is None:
            self.out = default_out(self.model.path, self.task.name)
        check(
            bool(str(self.out).strip()),
            "out",
            "is empty; give an output directory, e.g. out=runs/eval",
        )
        check(self.sampling.max_new_tokens is not None, "sampling.max_new_tokens", "must be >= 1")
        check(self.sampling.seed is not None, "sampling.seed", "give an integer seed, e.g. 0")
        self.model.check_inference("eval")
        self.task.split = self.task.split or "test"


def default_out(model: str, task: str) -> str:
    """runs/eval/MODEL-TASK: the model path's last part (Qwen2.5-Math-1.5B), path-safe; a training checkpoint
    (RUN/checkpoints/step-000060) is named with its run (RUN-step-000060), so two runs' checkpoints of the same
    step do not share a folder."""
    parts = model.rstrip("/\\").replace("\\", "/").split("/")
    name = parts[-1]
    name = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    if len(parts) >= 3 and parts[-2] == "checkpoints":
        name = f"{parts[-3]}-{name}"
    return f"runs/eval/{re.sub(r'[^A-Za-z0-9._-]+', '_', f'{name}-{task}')}"


def build_engine(cfg: EvalConfig, log=print):
    """-> (engine, tokenizer): the local model behind an hf/fast engine, or the served one (engine=openai)."""
    if cfg.engine != "openai":
        from ..data.templates import template_notice
        from ..rollout.factory import make_engine

        model, tok = cfg.model.load(seed=cfg.sampling.seed)
        model.eval()
        notice = template_notice(tok, cfg.task.template, cfg.model.path)
        if notice:
            log(notice)
        return make_engine(cfg.engine, model, tok), tok
    from ..models.load import ModelLoadError
    from ..sample.engine import load_tokenizer

    name = cfg.tokenizer or cfg.model.path
    try:
        tok = load_tokenizer(name, cfg.model.trust_remote_code)
    except Exception as e:  # noqa: BLE001  (transformers raises OSError, ValueError, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(
            f"cannot load the tokenizer '{name}' ({first}); pass the served model's tokenizer with "
            "--tokenizer DIR_OR_HUB_ID"
        ) from None
    return cfg.openai.engine(tok), tok


def run_eval(cfg: EvalConfig, log=print):
    """Evaluate cfg.model on cfg.task as configured; writes into cfg.out and returns the EvalResult."""
    import yaml

    from .held_out import answer_mode, evaluate_task
    from .report import make_report

    task = cfg.task.build()  # before the model: a wrong task option fails fast
    size = len(task.dataset(cfg.task.split))
    n = size if cfg.limit is None else min(cfg.limit, size)
    engine, tok = build_engine(cfg, log)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    who = f"{cfg.openai.model}@{cfg.openai.base_url}" if cfg.engine == "openai" else cfg.model.path
    mode = answer_mode(cfg, cfg.task)
    log(
        f"eval: {who} on {task.name}/{cfg.task.split}: {n} problems x k={cfg.k} "
        f"({type(engine).__name__}, accuracy reward '{task.accuracy_reward}', answers read strictly"
        + (f" and as {mode})" if mode != "tags" else ")")
    )
    try:
        result = evaluate_task(
            engine, tok, cfg.task, cfg, seed=cfg.sampling.seed, built=task, out_dir=out, log=log
        )
    finally:
        getattr(engine, "close", lambda: None)()
    if cfg.report:
        make_report(out)
    log(result.summary())
    log(f"eval: wrote {out / 'results.json'}, {out / 'samples.jsonl'}")
    return result
