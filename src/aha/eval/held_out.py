"""The one held-out evaluation: a task's split, sampled and scored as a HeldOutConfig says (aha.schema).

    evaluate_task(engine, tokenizer, task, ev, seed=...) -> EvalResult

`aha eval`, the RL and SFT trainers' evaluation every logging.eval_every steps, `aha demo`'s before/after and
every pipeline stage's evaluation call this, so they draw the same rows (the split's first `limit`), render them
the same way (the task's template, system prompt and prefill) and sample them the same way (the R1 paper's
temperature 0.6 / top-p 0.95 unless a config says otherwise). The lenient figures (`eval.answer`; auto = the
benchmark's own reading, aha.data.benchmarks.ANSWER) are reported beside the strict ones, and prompts are
checked against the context of the model behind the engine (eval/context.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..progress import Heartbeat
from ..schema import HeldOutConfig, TaskConfig
from .context import model_context
from .evaluate import EvalResult, evaluate


def answer_mode(ev: HeldOutConfig, task: TaskConfig) -> str:
    """eval.answer with "auto" resolved: the benchmark's lenient reading, or "tags" (strict only)."""
    from ..data.benchmarks import ANSWER

    return ANSWER.get(task.name, "tags") if ev.answer == "auto" else ev.answer


def evaluate_task(
    engine,
    tokenizer,
    task: TaskConfig,
    ev: HeldOutConfig,
    *,
    seed: int,
    split: str | None = None,
    built=None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    context: int | None = None,
) -> EvalResult:
    """Evaluate `engine` on the first ev.limit rows of `split` (default: task.split, else "test").

    seed: the run's seed, used where ev.sampling.seed is null. built: the aha.data.Task when the caller has
    it already (else built from `task`). out_dir: results.json and samples.jsonl are written there.
    context: the model's context in tokens (default: read from the engine's model when it has one).
    """
    built = built or task.build()
    split = split or task.split or "test"
    rows = task.rows(split, ev.limit, built)
    s = ev.sampling
    # a line every ~10 s through `log` while it samples (the batches' progress is shown at those beats)
    with Heartbeat("eval", log, status=f"sampling {len(rows)} problems x {ev.k}") as beat:
        return evaluate(
            engine,
            tokenizer,
            rows,
            accuracy=built.accuracy_reward,
            k=ev.k,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_tokens=s.max_new_tokens,
            stop=s.stop,
            include_stop_str_in_output=s.include_stop_str_in_output,
            template=task.template,
            system=task.system,
            prefill=task.prefill,
            batch_size=ev.batch_size,
            seed=seed if s.seed is None else s.seed,
            phrases=ev.reflection_phrases,
            n_boot=ev.n_boot,
            answer=answer_mode(ev, task),
            context=context or model_context(engine),
            out_dir=out_dir,
            log=log and beat.update,
            notice=log,  # once, not as the heartbeat's repeated status
        )
