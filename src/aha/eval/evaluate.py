"""Sampled evaluation of any Engine: k samples per problem, scored by the task's verifier and the format reward.

For P problems and k samples each (R1 paper defaults: temperature 0.6, top-p 0.95; aha.schema) this reports, averaged over
problems, with a percentile-bootstrap interval over problems (estimators.py):

    pass1            mean correctness of the k samples (the R1 paper's "pass@1")
    pass@j           unbiased pass@j for j = 1, 2, 4, ... < k and j = k (Chen et al. 2021)
    cons@k           correctness of the majority-vote answer (answers grouped by the task's equivalence)
    format           fraction of samples with format reward 1 (one <think> block then one <answer> block)
    len_mean / len_median / len_max   completion length in tokens (over all samples)
    truncated        fraction of samples that hit max_tokens (finish_reason "length")
    reflection_rate  fraction of samples with a re-checking phrase (reflection.py)
    revision_rate    fraction of samples that revise an intermediate answer (reflection.py)

These read the answer strictly, inside <answer> tags, as R1's rewards do. With answer="boxed" or "last-number"
the same figures read leniently are reported beside them: pass1_lenient, pass@j_lenient, cons@k_lenient
(scoring.py: the same verifier, the answer read elsewhere), so a base or instruct model's real accuracy shows
before it has learnt the tags (issue 20). With `context` (the model's, in tokens) a prompt that cannot fit is
skipped and counted (`skipped_prompts` in the settings), and max_tokens lowered to what fits (context.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..schema import EVAL_TEMPERATURE, EVAL_TOP_P
from .context import fit_to_context
from .estimators import bootstrap_ci, pass_at_k
from .reflection import compile_phrases, has_reflection, has_revision
from .result import EvalResult, _none_if_nan, _reference
from .scoring import column, score_samples

__all__ = ["EvalResult", "evaluate", "eval_metrics", "pass_ks"]


def pass_ks(k: int) -> list[int]:
    """The j of pass@j reported for k samples: powers of two below k, then k (k=6 -> [1, 2, 4, 6])."""
    js = [1 << i for i in range(k.bit_length()) if 1 << i < k]
    return js + [k]


def evaluate(
    engine,
    tokenizer,
    rows: Sequence[dict],
    *,
    accuracy: str,
    reward_runner=None,
    k: int = 4,
    temperature: float = EVAL_TEMPERATURE,
    top_p: float = EVAL_TOP_P,
    top_k: int = 0,
    max_tokens: int = 1024,
    template: str | Callable[[str], str] = "r1-zero",
    system: str | None = None,
    prefill: str = "",
    batch_size: int = 32,
    seed: int | None = 0,
    stop_token_ids: Sequence[int] | None = None,
    stop: Sequence[str] = (),
    include_stop_str_in_output: bool = False,
    equivalent: Callable[[str, str], bool] | None = None,
    extract: Callable[[str], str | None] | None = None,
    phrases: Sequence[str] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    answer: str = "tags",
    context: int | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> EvalResult:
    """Generate k samples for each row with `engine`, score them, and return the metrics (module docstring).

    rows: dicts with "question" plus the fields the accuracy reward takes (e.g. "answer").
    accuracy: the registered reward name that verifies the task (Task.accuracy_reward), e.g. "math".
    reward_runner: an aha.rewards.RewardRunner whose result names include `accuracy` and "format"; None
        builds one ([(accuracy, 1), ("format", 1)]) and closes it afterwards.
    template: a template name for aha.data.render_prompt, or a callable question -> prompt text.
    equivalent: answer equivalence for cons@k (default: scoring.py); extract: completion -> final
        answer or None (default aha.rewards.extract_answer), for the strict figures.
    answer: the lenient reading reported beside the strict one (aha.rewards.ANSWER_MODES; "tags": none).
    context: the model's context in tokens (None: no check; module docstring).
    batch_size: problems per engine.generate call (each with k samples).
    out_dir: when given, results.json and samples.jsonl are written there.
    log: progress lines; notice: a one-time note (prompts skipped for the context), to log when None.
    """
    from aha.rewards.answers import check_mode
    from aha.rollout import SamplingParams

    check_mode(answer)
    if len(rows) == 0:
        raise ValueError("evaluate() got no rows; check the task split and limit")
    if k < 1 or batch_size < 1:
        raise ValueError(
            f"evaluate() needs k >= 1 and batch_size >= 1, got k={k}, batch_size={batch_size}"
        )
    t_start = time.perf_counter()
    think_prefilled = prefill.strip().startswith("<think>")
    prompts = [_render(r["question"], template, tokenizer, system, prefill) for r in rows]
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    keep, fit_tokens = fit_to_context([len(x) for x in ids], max_tokens, context)
    skipped = len(rows) - len(keep)
    notice = notice or log
    if notice is not None and (skipped or fit_tokens < max_tokens):
        parts = []
        if skipped:
            parts.append(
                f"{skipped} of {len(rows)} prompts skipped (too long for the model's {context}-token context)"
            )
        if fit_tokens < max_tokens:
            parts.append(
                f"sampling.max_new_tokens {max_tokens} -> {fit_tokens} so the longest kept prompt fits "
                f"the {context}-token context"
            )
        notice("eval: " + "; ".join(parts))
    rows, prompts, ids = [rows[i] for i in keep], [prompts[i] for i in keep], [ids[i] for i in keep]
    if skipped and log is not None:  # the progress status counts the problems really sampled
        log(f"eval: sampling {len(rows)} problems x {k}")
    if stop_token_ids is None:
        from ..models.tokenizer import stop_token_ids as end_ids

        stop_token_ids = end_ids(
            tokenizer, getattr(engine, "model", None)
        )  # every end id of the model
    comps = []
    for start in range(0, len(rows), batch_size):
        params = SamplingParams(
            n=k,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=fit_tokens,
            stop_token_ids=tuple(stop_token_ids),
            stop=tuple(stop),
            include_stop_str_in_output=include_stop_str_in_output,
            seed=None if seed is None else seed + start,
        )
        chunk = engine.generate(ids[start : start + batch_size], params)
        if len(chunk) != k * len(ids[start : start + batch_size]):
            raise RuntimeError(
                f"engine returned {len(chunk)} completions for "
                f"{len(ids[start : start + batch_size])} prompts x {k}; it breaks the Engine protocol"
            )
        for c in chunk:
            c.prompt_index += start
        comps.extend(chunk)
        if log is not None:
            log(f"eval: generated {min(start + batch_size, len(rows))}/{len(rows)} problems")
    comps.sort(key=lambda c: c.prompt_index)  # stable: keeps sample order within a problem
    texts = [c.text for c in comps]
    row_of = [rows[c.prompt_index] for c in comps]

    own_runner = reward_runner is None
    if own_runner:
        from aha.rewards import RewardRunner

        reward_runner = RewardRunner(
            [(accuracy, 1.0), ("format", 1.0)], think_prefilled=think_prefilled
        )
    try:
        scored = reward_runner.score(texts, row_of)
        fmt = np.asarray(scored.scores, dtype=np.float64)[:, column(scored.names, "format")]  # (N,)
        kw = dict(accuracy=accuracy, k=k, extract=extract, equivalent=equivalent)
        strict = score_samples(texts, row_of, reward_runner, scored=scored, **kw)
        lenient = None
        if answer != "tags":
            lenient = score_samples(texts, row_of, reward_runner, mode=answer, **kw)
    finally:
        if own_runner:
            reward_runner.close()

    P = len(rows)
    correct, acc, answers, winners = strict.correct, strict.acc, strict.answers, strict.winners
    lengths = np.array([len(c.token_ids) for c in comps], dtype=np.float64).reshape(P, k)
    trunc = np.array([c.finish_reason == "length" for c in comps], dtype=np.float64).reshape(P, k)
    if phrases is not None:
        phrases = tuple(phrases)
        compile_phrases(phrases)  # empty phrases: its one-line error, with or without texts
    refl = np.array([has_reflection(t, phrases) for t in texts], dtype=np.float64).reshape(P, k)
    rev = np.array([has_revision(t) for t in texts], dtype=np.float64).reshape(P, k)
    fmt_ok = (np.nan_to_num(fmt, nan=0.0) >= 1.0 - 1e-9).astype(np.float64).reshape(P, k)

    per_problem = _accuracy_figures(strict, k)
    per_problem.update(
        {
            "format": (fmt_ok, np.mean),
            "len_mean": (lengths, np.mean),
            "len_median": (lengths, np.median),
            "len_max": (lengths, np.max),
            "truncated": (trunc, np.mean),
            "reflection_rate": (refl, np.mean),
            "revision_rate": (rev, np.mean),
        }
    )
    if lenient is not None:
        per_problem.update(_accuracy_figures(lenient, k, suffix="_lenient"))
    metrics = {name: float(stat(v)) for name, (v, stat) in per_problem.items()}
    ci = {
        name: bootstrap_ci(
            v, n_boot=n_boot, alpha=alpha, seed=0 if seed is None else seed, statistic=stat
        )
        for name, (v, stat) in per_problem.items()
    }

    samples = []
    for n, (c, text) in enumerate(zip(comps, texts)):
        i, j = divmod(n, k)
        rec = {
            "problem": keep[i],
            "sample": j,
            "question": str(rows[i]["question"]),
            "prompt": prompts[i],
            "completion": text,
            "answer": answers[n],
            "reference": _reference(rows[i]),
            "correct": bool(correct[i, j]),
            "accuracy": _none_if_nan(acc[n]),
            "format": _none_if_nan(fmt[n]),
            "majority": bool(j == winners[i]),
            "n_tokens": int(lengths[i, j]),
            "finish_reason": c.finish_reason,
            "reflection": bool(refl[i, j]),
            "revision": bool(rev[i, j]),
        }
        if lenient is not None:
            rec["answer_lenient"] = lenient.answers[n]
            rec["correct_lenient"] = bool(lenient.correct[i, j])
        samples.append(rec)
    settings = {
        "accuracy": accuracy,
        "answer": answer,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_tokens": fit_tokens,
        "template": template if isinstance(template, str) else "<callable>",
        "system": system,
        "prefill": prefill,
        "seed": seed,
        "n_boot": n_boot,
        "alpha": alpha,
        "context": context,
        "skipped_prompts": skipped,
    }
    result = EvalResult(
        metrics,
        ci,
        samples,
        n_problems=P,
        k=k,
        settings=settings,
        seconds=time.perf_counter() - t_start,
    )
    if out_dir is not None:
        result.write(out_dir)
    return result


def _accuracy_figures(s, k: int, suffix: str = "") -> dict[str, tuple[np.ndarray, Callable]]:
    """pass1, pass@j and cons@k of one scoring, per problem (for the means and their intervals)."""
    out = {f"pass1{suffix}": (s.correct.astype(np.float64), np.mean)}
    n_correct = s.correct.sum(axis=1)
    for j in pass_ks(k):
        out[f"pass@{j}{suffix}"] = (np.array([pass_at_k(k, int(c), j) for c in n_correct]), np.mean)
    out[f"cons@{k}{suffix}"] = (s.cons, np.mean)
    return out


def eval_metrics(
    engine,
    tokenizer,
    rows: Sequence[dict],
    *,
    accuracy: str,
    k: int = 4,
    prefix: str = "eval/",
    **kwargs,
) -> dict[str, float]:
    """For the training loop every N steps on a held-out split: evaluate() without bootstrap, flattened to
    {"eval/pass1", "eval/pass@k", "eval/cons@k", "eval/format", "eval/len_mean", "eval/reflection_rate", ...}.
    kwargs are evaluate()'s (template, system, prefill, max_tokens, temperature, reward_runner, seed, ...)."""
    kwargs.setdefault("n_boot", 0)
    return evaluate(engine, tokenizer, rows, accuracy=accuracy, k=k, **kwargs).flat(prefix)


def _render(question: str, template, tokenizer, system, prefill) -> str:
    if callable(template):
        return template(question) + prefill
    from aha.data import render_prompt

    return render_prompt(question, template, tokenizer=tokenizer, system=system, prefill=prefill)
