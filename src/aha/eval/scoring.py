"""Scoring one evaluation's samples under an answer mode: correctness, extracted answers and the majority vote.

    s = score_samples(texts, rows_of, runner, accuracy="math", k=4, mode="tags")   # the strict figure
    s = score_samples(texts, rows_of, runner, accuracy="math", k=4, mode="boxed")  # a lenient one beside it

mode "tags" is R1's rule, the one training rewards: the answer inside <answer> tags. A lenient mode ("boxed",
"last-number"; aha.rewards.answers) rewrites each completion as "<answer>{its answer}</answer>" first, so the
same verifier, through the same reward runner, scores it: strict and lenient differ only in where the answer
is read. A sample is correct iff its accuracy reward is 1 (NaN, "does not apply", counts as wrong).

Answer equivalence for cons@k: math tasks use the math verifier itself, run through the reward runner (its
worker processes and timeouts also bound these comparisons on hostile answers); other tasks use
`normalized_equal` unless an `equivalent` callable is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .estimators import majority_vote, normalized_equal


@dataclass
class Scored:
    acc: np.ndarray  # (N,) the accuracy reward of each sample (NaN: does not apply)
    correct: np.ndarray  # (P, k) bool
    answers: list  # (N,) the extracted answer of each sample, None when there is none
    winners: list[
        int
    ]  # (P,) the sample index of each problem's majority answer (first of its group)
    cons: np.ndarray  # (P,) float: is the majority answer correct


def score_samples(
    texts: Sequence[str],
    rows_of: Sequence[dict],
    runner,
    *,
    accuracy: str,
    k: int,
    mode: str = "tags",
    extract: Callable[[str], str | None] | None = None,
    equivalent: Callable[[str, str], bool] | None = None,
    scored=None,
) -> Scored:
    """Score N = P*k samples (problem-major) under `mode`. runner: an aha.rewards.RewardRunner with `accuracy`
    among its rewards. scored: the runner's result on `texts` when the caller has it (strict mode only)."""
    from aha.rewards import answer_completion, extract_answer

    col = column(runner.names, accuracy)
    if mode != "tags":
        texts = [answer_completion(t, mode) for t in texts]
        scored = None
    if scored is None:
        scored = runner.score(list(texts), list(rows_of))
    acc = np.asarray(scored.scores, dtype=np.float64)[:, col]  # (N,)
    if mode == "tags":
        answers = [(extract or extract_answer)(t) for t in texts]
    else:  # the rewritten completion holds exactly the lenient answer
        answers = [extract_answer(t) for t in texts]
    P = len(texts) // k
    ans_pk = [answers[i * k : (i + 1) * k] for i in range(P)]
    if equivalent is None and accuracy == "math":
        labels, equiv = cluster_with_runner(ans_pk, runner, col), (lambda a, b: a == b)
    else:
        labels, equiv = ans_pk, (equivalent or normalized_equal)
    correct = (np.nan_to_num(acc, nan=0.0) >= 1.0 - 1e-9).reshape(P, k)  # (P, k)
    winners = [majority_vote(labels[i], equiv)[0] for i in range(P)]
    cons = np.array([float(correct[i, w]) for i, w in enumerate(winners)])  # (P,)
    return Scored(acc, correct, answers, winners, cons)


def column(names: Sequence[str], name: str) -> int:
    if name not in names:
        raise ValueError(
            f"the reward runner has no '{name}' reward (it has {', '.join(names)}); "
            f"build it with [('{name}', 1.0), ...] or pass reward_runner=None"
        )
    return list(names).index(name)


def cluster_with_runner(answer_lists: list[list], runner, col: int) -> list[list]:
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
