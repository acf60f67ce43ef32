"""The synthetic pretraining corpus of the tiny base model.

Three kinds of documents, each a plain string (the pretraining loop appends the end-of-text token):

* drill  -- lines of one-step sums/differences ("82-8 = 74"): the arithmetic the steps need.
* plain  -- a chain problem in a Q/A or dialogue layout, solved with steps ("37+5-8 = 42-8 = 34") with
            probability `p_steps_plain`, else answered directly ("34").
* tagged -- an instruction that names an output format in words with two tag names drawn from a pool or
            made of random letters (e.g. "Put the working inside <calc> </calc> and the answer inside <res>
            </res>"), then a dialogue in which the responder follows it: "<calc> 37+5-8 = 42-8 = 34 </calc>
            <res> 34 </res>" with probability `p_steps`, else a short remark ("<calc> mental math </calc>").
            With probability `p_ignore_format` the responder ignores the format (answers in plain text).

The tagged documents teach the generic skill "copy the tag names the instruction states and fill them in",
which is what lets the base model follow the R1-Zero template's <think>/<answer> instruction at all. The
tag pool never contains "think" or "answer" (as a whole tag or inside one), the instruction sentences are
our own paraphrases (never a sentence of the R1-Zero template), and every chain of numbers in a document (its
question and each rewritten step) is a "train" problem (aha.data.chain.split_of), so held-out problems never occur.
tests/test_demo_corpus.py checks all three.

Worked solutions rewrite the chain one operation at a time ("31+3+2 = 34+2 = 36", see step_text).
Steps sometimes include a re-check: a wrong running value followed by "wait, ..." and the corrected step, or a
confirmed re-computation. RL can then amplify re-checking if it pays (issue 4, part 3, counts it). In the
shipped corpus it does not pay: the steps are right anyway. With p_slip > 0 the step writers slip (a wrong
running value that carries on to the answer) unless the solution verifies every step (p_verify), which
catches each slip: see noisy_steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..config import check
from ..data.chain import FIRST, REST, Problem, chains_in, sample_split, split_of
from .phrases import (
    DIRECT_REMARKS,
    EXAMPLES,
    FORMAT_LINES,
    LETTERS,
    OPENERS,
    PROCESS_LINES,
    QUESTIONS,
    ROLE_LINES,
    ROLES,
    TAGS,
    VALUE_WORDS,
    WORK_WORDS,
)


@dataclass
class CorpusConfig:
    n_docs: int = 150_000  # documents generated
    seed: int = 0  # the corpus's own random stream
    min_terms: int = 2  # corpus problems have min..max numbers; the demo's held-out ones 3..5
    max_terms: int = 5  # see min_terms
    mix_drill: float = 0.25  # document-kind weights (normalised)
    mix_plain: float = 0.30  # plain: a problem in a Q/A or dialogue layout, no tags
    mix_tagged: float = 0.45  # tagged: an instruction naming the answer's tags
    p_steps: float = 0.25  # a tagged solution writes its steps (else a direct answer): sets the
    # base model's step rate under the R1-Zero template (measured 0.255)
    # a plain solution writes its steps: practice at copying and stepping
    p_steps_plain: float = 0.6
    # a step solution contains one re-check ("wait, ..."); unused when p_slip
    p_recheck: float = 0.10
    # or p_verify is set (noisy_steps writes the solutions then)
    p_ignore_format: float = 0.10  # a tagged document's responder ignores the stated format
    p_slip: float = 0.0  # each written step slips (a wrong running value) with this probability
    p_verify: float = 0.0  # a step solution verifies every step, catching and fixing its slips

    def __post_init__(self):
        check(self.n_docs >= 1, "n_docs", f"must be >= 1, got {self.n_docs}")
        check(
            2 <= self.min_terms <= self.max_terms,
            "min_terms",
            f"need 2 <= min_terms <= max_terms, got {self.min_terms}..{self.max_terms}",
        )
        mix = (self.mix_drill, self.mix_plain, self.mix_tagged)
        check(
            min(mix) >= 0 and sum(mix) > 0,
            "mix_tagged",
            f"mix weights must be >= 0 with a positive sum, got {mix}",
        )
        for name in (
            "p_steps",
            "p_steps_plain",
            "p_recheck",
            "p_ignore_format",
            "p_slip",
            "p_verify",
        ):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, name, f"is a probability, must be in [0, 1], got {v}")


def segment(p: Problem, i: int, value: int | None = None) -> str:
    """The expression after i operations are done: "36-3+1" for i = 2 of "31+3+2-3+1"."""
    head = p.numbers[0] if i == 0 else p.partials()[i - 1]
    tail = [f"{op}{n}" for op, n in zip(p.ops[i:], p.numbers[i + 1 :])]
    return "".join([str(head if value is None else value)] + tail)


def step_text(p: Problem, rng: random.Random, p_recheck: float) -> str:
    """The chain rewritten one operation at a time: "31+3+2 = 34+2 = 36".

    Each segment is the previous one with its first two numbers replaced by their sum/difference, so the
    model only ever copies a nearby tail and does one small operation (a tiny model fails to fetch "the k-th
    operand" from the question: measured, the steps were right but used wrong operands). At most one
    re-check: a slip that is noticed and fixed, or a confirmed re-computation.
    """
    k = len(p.ops)
    recheck_at = rng.randint(1, k) if rng.random() < p_recheck else -1
    parts = [segment(p, 0)]
    for i in range(1, k + 1):
        prev = p.numbers[0] if i == 1 else p.partials()[i - 2]
        op, n, right = p.ops[i - 1], p.numbers[i], p.partials()[i - 1]
        if i == recheck_at and rng.random() < 0.6:  # a slip, noticed and fixed
            wrong = right + rng.choice([-10, 10, -1, 1]) if right >= 10 else right + 1
            fix = rng.choice(["wait, {s}, not {w}", "wait, let me recheck: {s}", "hmm, no: {s}"])
            parts.append(
                f"{segment(p, i, wrong)}, "
                + fix.format(s=f"{prev}{op}{n} = {right}", w=wrong)
                + f", so {segment(p, i)}"
            )
        elif i == recheck_at:  # a confirmed re-computation
            parts.append(f"{segment(p, i)} (check: {prev}{op}{n} = {right}, yes)")
        else:
            parts.append(segment(p, i))
    return " = ".join(parts)


def slipped(rng: random.Random, right: int, floor: int) -> int:
    """A wrong running value near `right` (off by 1 or 10) that keeps every later running value >= 0:
    `floor` is the lowest value the rest of the chain reaches from `right`."""
    return right + rng.choice([d for d in (-10, 10, -1, 1) if floor + d >= 0])


def noisy_steps(p: Problem, rng: random.Random, p_slip: float, verify: bool) -> tuple[str, int]:
    """The chain rewritten one operation at a time by a writer who slips -> (text, the answer it reaches).

    Each step's running value is wrong with probability p_slip (off by 1 or 10). Without `verify` a slip
    stands and carries on to the answer: "31+3+2 = 35+2 = 37". With `verify` every step is recomputed: a right
    one is confirmed ("34+2 (verify: 31+3 = 34)"), a slip is caught and fixed ("35+2, wait, no: 31+3 = 34, so
    34+2"), and the answer is right. Verifying thus pays exactly when the writer slips: RL on a model
    pretrained on both kinds of writer has a reason to make it verify (issue 4's re-checking).
    """
    value, parts = p.numbers[0], [segment(p, 0)]
    partials = p.partials()
    for i in range(1, len(p.ops) + 1):
        op, n = p.ops[i - 1], p.numbers[i]
        right = value + n if op == "+" else value - n
        floor = right + min(partials[i - 1 :]) - partials[i - 1]
        v = slipped(rng, right, floor) if rng.random() < p_slip else right
        if not verify:
            parts.append(segment(p, i, v))
            value = v
            continue
        if v != right:
            parts.append(
                f"{segment(p, i, v)}, wait, no: {value}{op}{n} = {right}, so {segment(p, i, right)}"
            )
        else:
            parts.append(f"{segment(p, i, right)} (verify: {value}{op}{n} = {right})")
        value = right
    return " = ".join(parts), value


def worked(p: Problem, rng: random.Random, cfg: CorpusConfig) -> tuple[str, int]:
    """A worked solution and the answer it reaches. Without slips or verifying, step_text and the right
    answer, drawing from rng exactly as before these options existed (the shipped corpus is unchanged)."""
    if cfg.p_slip == 0 and cfg.p_verify == 0:
        return step_text(p, rng, cfg.p_recheck), p.answer
    return noisy_steps(p, rng, cfg.p_slip, verify=rng.random() < cfg.p_verify)


def drill_doc(rng: random.Random) -> str:
    """One-step facts over the range the running steps visit (a total, then one digit)."""
    lines = []
    for _ in range(rng.randint(4, 10)):
        a, b = rng.randint(0, FIRST[1] + 6 * REST[1]), rng.randint(*REST)
        lines.append(
            f"{a}+{b} = {a + b}" if (a < b or rng.random() < 0.5) else f"{a}-{b} = {a - b}"
        )
    return "\n".join(lines)


def plain_doc(p: Problem, rng: random.Random, cfg: CorpusConfig) -> str:
    q = rng.choice(QUESTIONS).format(e=p.expression)
    steps = rng.random() < cfg.p_steps_plain
    work, answer = worked(p, rng, cfg) if steps else ("", p.answer)
    sol = f"{work}. So the answer is {answer}." if steps else f"{answer}"
    layout = rng.randrange(4)
    if layout == 0:
        return f"Q: {q} A: {sol}"
    if layout == 1:
        return f"Problem: {q}\nSolution: {sol}"
    if layout == 2:
        a, b = rng.choice(ROLES)
        return f"{a}: {q} {b}: {sol}"
    return f"{p.expression} = {p.answer}" if not steps else f"{q}\n{sol}"


def _tag(rng: random.Random) -> str:
    if rng.random() < 0.5:  # random strings force copying, not memorising a few names
        return "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 7)))
    return rng.choice(TAGS)


def tagged_doc(p: Problem, rng: random.Random, cfg: CorpusConfig) -> str:
    A, B = rng.choice(ROLES)
    X = _tag(rng)
    Y = _tag(rng)
    while Y == X or "think" in X + Y or "answer" in X + Y:
        X, Y = _tag(rng), _tag(rng)
    names = dict(A=A, B=B, a=A.lower(), b=B.lower(), X=X, Y=Y)
    fmt = rng.choice(FORMAT_LINES) + rng.choice(EXAMPLES).format(
        X="{X}", Y="{Y}", w=rng.choice(WORK_WORDS), v=rng.choice(VALUE_WORDS)
    )
    parts = [rng.choice(OPENERS), rng.choice(ROLE_LINES), rng.choice(PROCESS_LINES), fmt]
    if rng.random() < 0.2:  # the format sentence sometimes comes first
        parts = [parts[3]] + parts[:3]
    instruction = " ".join(s for s in parts if s).format(**names)
    q = rng.choice(QUESTIONS).format(e=p.expression) + rng.choice(["", "", "."])
    steps = rng.random() < cfg.p_steps
    work, answer = worked(p, rng, cfg) if steps else (rng.choice(DIRECT_REMARKS), p.answer)
    if rng.random() < cfg.p_ignore_format:
        reply = f"{work}. The answer is {answer}." if steps else f"The answer is {answer}."
    else:
        sep = rng.choice([" ", " ", "\n"])
        reply = f"<{X}> {work} </{X}>{sep}<{Y}> {answer} </{Y}>"
    nl = rng.choice([" ", " ", "\n"])
    return f"{instruction}{nl}{A}: {q}{nl}{B}: {reply}"


def build_corpus(cfg: CorpusConfig) -> list[str]:
    """`cfg.n_docs` documents, a pure function of cfg (same cfg, same list)."""
    rng = random.Random(cfg.seed)
    weights = [cfg.mix_drill, cfg.mix_plain, cfg.mix_tagged]
    docs = []
    for _ in range(cfg.n_docs):
        kind = rng.choices(range(3), weights)[0]
        if kind == 0:
            docs.append(drill_doc(rng))
            continue
        while (
            True
        ):  # keep only documents whose every chain (question and each step) is a train problem
            p = sample_split(rng, "train", min_terms=cfg.min_terms, max_terms=cfg.max_terms)
            doc = plain_doc(p, rng, cfg) if kind == 1 else tagged_doc(p, rng, cfg)
            if all(split_of(c) == "train" for c in chains_in(doc)):
                break
        docs.append(doc)
    return docs
