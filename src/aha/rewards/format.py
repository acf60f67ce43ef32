"""Format rewards and answer extraction for the R1-Zero output form.

The R1-Zero template asks for

    <think> reasoning </think> <answer> answer </answer>

`format_reward` is R1's rule-based format reward: 1 iff the completion is exactly that shape (whitespace
around and between the blocks, nothing after `</answer>`, both blocks non-empty, each tag exactly once).
Tags are matched byte-exactly in ASCII, so look-alike tags (Cyrillic "а", fullwidth "＜") are plain text and
never count. With `think_prefilled=True` the prompt already ends in `<think>` (R1-Distill chat templates,
TinyZero), so the completion starts inside the reasoning and must not open `<think>` again.

`tag_reward` is the partial-credit variant used for early training: 0.25 per tag that occurs exactly once in
its place (see the function).

Neither pays for the template's placeholder (issue 20: a chat model under GRPO learned to answer with the literal
`reasoning process here </think> <answer> N </answer>` it read in the R1-Zero instructions). The placeholder
words PLACEHOLDERS ("reasoning process here", "answer here", any case and spacing) are deleted from a block
before it is judged, and then a think block is *near-empty* when it keeps fewer than `min_think_chars`
(MIN_THINK_CHARS = 4) non-space characters ("", "...", "ok", "hmm": no reasoning; "2+2=4" is enough), an answer
block when it keeps none. A completion whose closed think block is near-empty, or whose closed answer block is,
scores 0 under both rewards. No length threshold tells reasoning from filler; the accuracy reward has to. `extract_answer` returns the last answer block (inside it the last balanced
`\\boxed{...}` when there is one); every accuracy reward reads the answer through it, so an answer outside the
tags never scores.

All functions are total: any string in, a float (or str/None) out, linear time, no exception.
"""

from __future__ import annotations

import re

TAGS = ("<think>", "</think>", "<answer>", "</answer>")

_FULL = re.compile(
    r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL
)
_FULL_PREFILLED = re.compile(
    r"(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL
)
# \boxed{...} / \fbox{...} (a space before the brace allowed), or MATH's brace-less \boxed 5: one token
_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{|\\boxed\s+(?=[^\s{$])")
_BARE_BOX = re.compile(r"[^\s$}]+")
# The words of the R1-Zero template's example (aha.data.templates.R1_ZERO) standing for the two blocks.
PLACEHOLDERS = ("reasoning process here", "answer here")
_PLACEHOLDER = re.compile("|".join(r"\s+".join(p.split()) for p in PLACEHOLDERS), re.IGNORECASE)
MIN_THINK_CHARS = (
    4  # fewer non-space characters (placeholder removed) make a think block near-empty
)


def _substance(block: str) -> int:
    """Non-space characters of `block` once the template's placeholder words are deleted."""
    return len("".join(_PLACEHOLDER.sub(" ", block).split()))


def think_block(completion: str, *, think_prefilled: bool = False) -> str | None:
    """The reasoning: from the start (prefilled) or the last <think> before the first </think>, up to that
    </think>; None when there is no </think>."""
    if not isinstance(completion, str):
        return None
    end = completion.find("</think>")
    if end < 0:
        return None
    start = -1 if think_prefilled else completion.rfind("<think>", 0, end)
    return completion[start + len("<think>") : end] if start >= 0 else completion[:end]


def _hollow(completion: str, think_prefilled: bool, min_think_chars: int) -> bool:
    """True when a closed think block is near-empty or a closed answer block empty (module docstring)."""
    think, answer = (
        think_block(completion, think_prefilled=think_prefilled),
        answer_block(completion),
    )
    return (think is not None and _substance(think) < min_think_chars) or (
        answer is not None and _substance(answer) == 0
    )


def format_reward(
    completion: str, *, think_prefilled: bool = False, min_think_chars: int = MIN_THINK_CHARS
) -> float:
    """1.0 iff `completion` is exactly one think block then one answer block, neither empty nor the
    template's placeholder, the think block at least `min_think_chars` non-space characters; else 0.0."""
    if not isinstance(completion, str) or _hollow(completion, think_prefilled, min_think_chars):
        return 0.0
    counts = [completion.count(t) for t in TAGS]
    if counts != ([0, 1, 1, 1] if think_prefilled else [1, 1, 1, 1]):
        return 0.0  # a repeated or missing tag anywhere (e.g. "<answer>" mentioned inside the reasoning)
    m = (_FULL_PREFILLED if think_prefilled else _FULL).fullmatch(completion)
    if m is None or not m["think"].strip() or not m["answer"].strip():
        return 0.0
    return 1.0


def tag_reward(
    completion: str, *, think_prefilled: bool = False, min_think_chars: int = MIN_THINK_CHARS
) -> float:
    """Partial credit, 0.25 per tag placed correctly; 0 for a near-empty think or empty answer block.

    A tag is placed correctly when it occurs exactly once and after every earlier tag of the sequence
    <think> </think> <answer> </answer> that occurs exactly once; in addition <think> must be preceded only by
    whitespace and </answer> followed only by whitespace. With `think_prefilled` the <think> credit is given
    for *not* repeating the prefilled tag. A completion with format_reward 1 gets tag_reward 1. Whatever the
    tags, a closed think block that is near-empty or a closed answer block that is empty once the template's
    placeholder is deleted (module docstring) scores 0.
    """
    if not isinstance(completion, str) or _hollow(completion, think_prefilled, min_think_chars):
        return 0.0
    score, last = 0.0, -1
    for i, tag in enumerate(TAGS):
        if i == 0 and think_prefilled:
            score += 0.25 if tag not in completion else 0.0
            continue
        if completion.count(tag) != 1:
            continue
        pos = completion.index(tag)
        in_order, last = pos > last, max(last, pos)
        if not in_order:
            continue
        if i == 0 and completion[:pos].strip():
            continue
        if i == 3 and completion[pos + len(tag) :].strip():
            continue
        score += 0.25
    return score


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces, or of a brace-less `\\boxed 5`
    (its one token); None if there is none or the last is never closed."""
    if not isinstance(text, str):
        return None
    starts = list(_BOXED_START.finditer(text))  # nested boxes included: the last start wins
    return _box_at(text, starts[-1])[0] if starts else None


def all_boxed(text: str) -> list[str]:
    """Contents of every outermost balanced `\\boxed{...}` / `\\fbox{...}` (and brace-less `\\boxed 5`), in
    order, without repeats."""
    out: list[str] = []
    if not isinstance(text, str):
        return out
    pos = 0
    while (m := _BOXED_START.search(text, pos)) is not None:
        box, pos = _box_at(text, m)
        if box is None:
            break  # unbalanced: nothing after it is read
        box = box.strip()
        if box not in out:
            out.append(box)
    return out


def _box_at(text: str, m: re.Match) -> tuple[str | None, int]:
    """The content of the box `m` starts and the index after it; (None, end) when its brace is never closed."""
    if text[m.end() - 1] != "{":  # \boxed 5
        t = _BARE_BOX.match(text, m.end())
        return t.group(), t.end()
    j = _closing(text, m.end() - 1)
    return (None, len(text)) if j is None else (text[m.end() : j], j + 1)


def _closing(text: str, i: int) -> int | None:
    """Index of the "}" closing the "{" at text[i]; None when it is never closed."""
    depth = 0
    for j in range(i, len(text)):  # linear scan; a 5,000-deep nest is just 5,000 steps
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def answer_block(completion: str) -> str | None:
    """Content of the last `<answer>...</answer>` block (None if the last `<answer>` is never closed)."""
    if not isinstance(completion, str):
        return None
    start = completion.rfind("<answer>")
    if start < 0:
        return None
    start += len("<answer>")
    end = completion.find("</answer>", start)
    if end < 0:
        return None
    return completion[start:end]


def extract_answer(completion: str) -> str | None:
    """The final answer: the last answer block, inside it the last balanced \\boxed{} when present; stripped.

    None when there is no closed answer block. The answer may be the empty string (an empty block), which no
    accuracy reward accepts.
    """
    block = answer_block(completion)
    if block is None:
        return None
    boxed = last_boxed(block)
    return (boxed if boxed is not None else block).strip()
