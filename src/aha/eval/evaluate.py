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

A sample is correct iff its accuracy reward is 1 (NaN, "does not apply", counts as wrong). Answer equivalence
for cons@k: math tasks use the math verifier itself, run through the reward runner (its worker processes and
timeouts also bound these comparisons on hostile answers); other tasks use `normalized_equal` unless an
`equivalent` callable is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..schema import EVAL_TEMPERATURE, EVAL_TOP_P
from .estimators import bootstrap_ci, majority_vote, normalized_equal, pass_at_k
from .reflection import compile_phrases, has_revision
from .result import EvalResult, _none_if_nan, _reference

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
    equivalent: Callable[[str, str], bool] | None = None,
    extract: Callable[[str], str | None] | None = None,
    phrases: Sequence[str] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Generate k samples for each row with `engine`, score them, and return the metrics (module docstring).

    rows: dicts with "question" plus the fields the accuracy reward takes (e.g. "answer").
    accuracy: the registered reward name that verifies the task (Task.accuracy_reward), e.g. "math".
    reward_runner: an aha.rewards.RewardRunner whose result names include `accuracy` and "format"; None
        builds one ([(accuracy, 1), ("format", 1)]) and closes it afterwards.
    template: a template name for aha.data.render_prompt, or a callable question -> prompt text.
    equivalent: answer equivalence for cons@k (default: module docstring); extract: completion -> final
        answer or None (default aha.rewards.extract_answer).
    batch_size: problems per engine.generate call (each with k samples).
    out_dir: when given, results.json and samples.jsonl are written there.
    """
    from aha.rollout import SamplingParams

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
            max_tokens=max_tokens,
            stop_token_ids=tuple(stop_token_ids),
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
        acc_col, fmt_col = _column(scored.names, accuracy), _column(scored.names, "format")
        acc = np.asarray(scored.scores, dtype=np.float64)[:, acc_col]  # (N,)
        fmt = np.asarray(scored.scores, dtype=np.float64)[:, fmt_col]  # (N,)
        if extract is None:
            from aha.rewards import extract_answer as extract
        answers = [extract(t) for t in texts]
        P = len(rows)
        ans_pk = [answers[i * k : (i + 1) * k] for i in range(P)]
        if equivalent is None and accuracy == "math":
            labels = _cluster_with_runner(ans_pk, reward_runner, acc_col)
            cons_answers, equiv = labels, (lambda a, b: a == b)
        else:
            cons_answers, equiv = ans_pk, (equivalent or normalized_equal)
    finally:
        if own_runner:
            reward_runner.close()

    correct = (np.nan_to_num(acc, nan=0.0) >= 1.0 - 1e-9).reshape(P, k)  # (P, k)
    lengths = np.array([len(c.token_ids) for c in comps], dtype=np.float64).reshape(P, k)
    trunc = np.array([c.finish_reason == "length" for c in comps], dtype=np.float64).reshape(P, k)
    pat = compile_phrases(phrases) if phrases is not None else compile_phrases()
    refl = np.array([pat.search(t) is not None for t in texts], dtype=np.float64).reshape(P, k)
    rev = np.array([has_revision(t) for t in texts], dtype=np.float64).reshape(P, k)
    fmt_ok = (np.nan_to_num(fmt, nan=0.0) >= 1.0 - 1e-9).astype(np.float64).reshape(P, k)
    winners = [majority_vote(cons_answers[i], equiv)[0] for i in range(P)]
    cons = np.array([float(correct[i, w]) for i, w in enumerate(winners)])  # (P,)

    per_problem: dict[str, tuple[np.ndarray, Callable]] = {
        "pass1": (correct.astype(np.float64), np.mean)
    }
    n_correct = correct.sum(axis=1)
    for j in pass_ks(k):
        per_problem[f"pass@{j}"] = (np.array([pass_at_k(k, int(c), j) for c in n_correct]), np.mean)
    per_problem[f"cons@{k}"] = (cons, np.mean)
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
        samples.append(
            {
                "problem": i,
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
        )
    settings = {
        "accuracy": accuracy,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_tokens": max_tokens,
        "template": template if isinstance(template, str) else "<callable>",
        "system": system,
        "prefill": prefill,
        "seed": seed,
        "n_boot": n_boot,
        "alpha": alpha,
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


def _column(names: Sequence[str], name: str) -> int:
    if name not in names:
        raise ValueError(
            f"the reward runner has no '{name}' reward (it has {', '.join(names)}); "
            f"build it with [('{name}', 1.0), ...] or pass reward_runner=None"
        )
    return list(names).index(name)


def _cluster_with_runner(answer_lists: list[list], runner, col: int) -> list[list]:
    """Greedy equivalence grouping (as estimators.majority_vote) of every problem's answers, with the math
    verifier run in the reward runner's workers: round r takes each problem's first still-ungrouped answer
    as a representative and checks all later ungrouped answers against it in one batched score() call.
    Identical strings (whitespace aside) are grouped without asking. Returns per problem a label per answer
    (the representative's index, None for None answers)."""
    keys = [
        [None if a is None else "".join(str(a).split()) for a in answers]
        for answers in answer_lists
    ]
    distinct = [
        list(dict.fromkeys(x for x in ks if x is not None)) for ks in keys
    ]  # first-occurrence order
    label: list[dict[str, str]] = [{} for _ in answer_lists]  # distinct key -> rep key
    while True:
        pairs = []  # (problem, rep, member)
        for p, ds in enumerate(distinct):
            todo = [d for d in ds if d not in label[p]]
            if todo:
                label[p][todo[0]] = todo[0]
                pairs.extend((p, todo[0], d) for d in todo[1:])
        if not pairs:
            break
        res = runner.score(
            [f"<answer>{m}</answer>" for _, _, m in pairs], [{"answer": r} for _, r, _ in pairs]
        )
        hit = np.nan_to_num(np.asarray(res.scores, dtype=np.float64)[:, col], nan=0.0) >= 1.0 - 1e-9
        for (p, rep, member), ok in zip(pairs, hit):
            if ok:
                label[p][member] = rep
    out = []
    for ks, lab in zip(keys, label):
        first = {}
        for i, key in enumerate(ks):
            if key is not None:
                first.setdefault(lab[key], i)
        out.append([None if key is None else first[lab[key]] for key in ks])
    return out
