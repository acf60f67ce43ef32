"""Supervised fine-tuning data: rows -> token ids with a completion mask -> packed rows without cross-talk.

Row formats (one dataset may mix them):
- prompt/completion: {"prompt": str, "completion": str}. With a template set, the prompt is rendered from the
  row's "question" instead (aha.data.render_prompt), so cold-start, rejection-sampled and distilled rows all
  end up in the exact prompt format the RL stage uses.
- chat: {"messages": [{"role": ..., "content": ...}, ...]} rendered by the tokenizer's chat template; every
  assistant turn (its content and end-of-turn tokens) is trained on, everything else is context.
  A prompt given as a message list with a string or message-list completion is the same thing.
- text: {"text": str} (TRL's language-modeling format): the whole text is trained on, then eos.

Token layout of one example (no special tokens added, as for RL prompts):
    ids  = tok(prompt) + tok(completion) + [eos]         mask = [0]*len(prompt) + [1]*(len(completion) + 1)
so the model learns to stop where the RL engine stops. Examples longer than `max_length` are cut at the
right (the prompt is kept); examples with no trainable token left are dropped and counted.

Packing: documents are placed first-fit into rows of at most `max_length` tokens. Each document keeps its own
positions (0, 1, 2, ... restarting at every document) and a segment id; attention is block-diagonal causal:
    token q may attend to token k  iff  segment[q] == segment[k] and k <= q
so a packed forward computes exactly the logits of separate forwards (tests/test_sft_data.py checks this).
The target of position t is token t+1, trained only when that token is a completion token of the same document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

# torch is imported where tensors are made: the row checks before a model loads need none
if TYPE_CHECKING:
    import torch

__all__ = [
    "Example",
    "PackedBatch",
    "read_rows",
    "check_rows",
    "to_example",
    "build_examples",
    "pack",
    "collate",
    "block_causal_mask",
]


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token is trained on (completion), same length as input_ids

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # (R, L) documents packed into R rows, right-padded
    position_ids: torch.Tensor  # (R, L) restart at 0 at every document
    segment_ids: torch.Tensor  # (R, L) document number within its row; -1 on padding
    loss_mask: torch.Tensor  # (R, L-1) float: 1 where target input_ids[:, t+1] is trained on

    @property
    def n_tokens(self) -> int:
        return int((self.segment_ids >= 0).sum())


# ---- reading rows ------------------------------------------------------------------------------------------
def read_rows(source: str, split: str = "train", config: str | None = None) -> list[dict]:
    """Rows of a .jsonl / .json / .csv / .parquet file, a `datasets` directory or a hub dataset: the reader RL
    tasks use (aha.data.read), so both stages take the same sources and give the same one-line errors."""
    from aha.data.read import read_rows as read

    return read(source, split=split, config=config)


def check_rows(rows: list[dict], fmt: RowFormat, source: str) -> None:
    """Without a tokenizer (before any model loads): every row is in a format to_example() takes. Raises one
    DataError naming the source, the first bad row, what is wrong and the key to set, and how many other rows
    are bad (so one fix-and-rerun finds them all)."""
    from aha.data.read import DataError

    if not rows:
        raise DataError(f"{source}: no rows; SFT needs a non-empty file")
    bad = [(n, p) for n, row in enumerate(rows, 1) if (p := _row_problem(row, fmt)) is not None]
    if bad:
        n, problem = bad[0]
        more = ""
        if len(bad) > 1:
            shown = ", ".join(str(m) for m, _ in bad[1:6]) + (", ..." if len(bad) > 6 else "")
            more = f" ({len(bad) - 1} more bad rows: {shown})"
        raise DataError(f"{source}: row {n}: {problem}{more}")


def _row_problem(row: dict, fmt: RowFormat) -> str | None:
    """What keeps to_example() from taking the row (with the key to set), or None."""
    keys = ", ".join(sorted(map(str, row)))
    if fmt.messages_key in row:
        msgs = row[fmt.messages_key]
        if not isinstance(msgs, list) or not any(
            isinstance(m, dict) and m.get("role") == "assistant" for m in msgs
        ):
            return f"'{fmt.messages_key}' has no assistant message to train on"
        return None
    if fmt.completion_key in row and row[fmt.completion_key] is None:
        return f"'{fmt.completion_key}' is null; give the completion text"
    if fmt.completion_key not in row and fmt.text_key in row:  # language modeling: all of it
        text = row[fmt.text_key]
        if not isinstance(text, str):
            return f"'{fmt.text_key}' is a {type(text).__name__}, not text"
        return None if text.strip() else f"'{fmt.text_key}' is empty; drop the row"
    if row.get(fmt.completion_key) is None:
        return (
            f"neither '{fmt.messages_key}', '{fmt.completion_key}' nor '{fmt.text_key}' (keys: "
            f"{keys}); set data.completion_key / data.messages_key / data.text_key"
        )
    prompt, completion = row.get(fmt.prompt_key), row[fmt.completion_key]
    number = isinstance(completion, (int, float)) and not isinstance(completion, bool)
    text = isinstance(completion, str) or (number and math.isfinite(completion))
    chat = (  # messages + messages
        isinstance(prompt, list)
        and isinstance(completion, list)
        and all(isinstance(m, dict) for m in completion)
    )
    if not (text or chat):
        hint = (
            " (a message list needs a message-list prompt)" if isinstance(completion, list) else ""
        )
        return (
            f"'{fmt.completion_key}' is a {type(completion).__name__}, not text{hint}; set "
            "data.completion_key to the column that holds the completion text"
        )
    if isinstance(completion, str) and not completion.strip():
        return f"'{fmt.completion_key}' is empty; there is nothing to train on (drop the row)"
    if fmt.template is not None and fmt.question_key not in row:
        return (
            f"data.template is set but the row has no '{fmt.question_key}'; set data.question_key, or "
            "data.template=null to use the row's prompt as is"
        )
    if fmt.template is None and row.get(fmt.prompt_key) is None:
        return (
            f"no '{fmt.prompt_key}' (keys: {keys}); set data.prompt_key, or data.template to render "
            "the prompt from the question"
        )
    return None


# ---- rows -> examples --------------------------------------------------------------------------------------
@dataclass
class RowFormat:
    prompt_key: str = "prompt"
    completion_key: str = "completion"
    messages_key: str = "messages"
    question_key: str = "question"
    template: str | None = None  # set: prompt = render_prompt(row[question_key], template, ...)
    system: str | None = None
    prefill: str = ""
    add_eos: bool = True
    text_key: str = "text"


def to_example(row: dict, tokenizer, fmt: RowFormat | None = None) -> Example:
    """One row (any supported format, see the module docstring) -> token ids and completion mask."""
    fmt = fmt or RowFormat()
    segments = _segments(row, tokenizer, fmt)  # [(text, trained?)]
    ids, mask = [], []
    for text, trained in segments:
        t = tokenizer(text, add_special_tokens=False).input_ids if text else []
        ids += t
        mask += [int(trained)] * len(t)
    if (
        fmt.add_eos
        and fmt.messages_key not in row
        and not isinstance(row.get(fmt.prompt_key), list)
    ):
        ids.append(tokenizer.eos_token_id)
        mask.append(1)
    return Example(ids, mask)


def _segments(row: dict, tokenizer, fmt: RowFormat) -> list[tuple[str, bool]]:
    if fmt.messages_key in row:
        return _chat_segments(list(row[fmt.messages_key]), tokenizer, n_context=None)
    prompt, completion = row.get(fmt.prompt_key), row.get(fmt.completion_key)
    if completion is None and isinstance(row.get(fmt.text_key), str):
        return [(row[fmt.text_key], True)]
    if completion is None:
        raise ValueError(
            f"row has neither '{fmt.messages_key}' nor '{fmt.completion_key}' (keys: {sorted(row)}); "
            "set data.completion_key / data.messages_key to your column names"
        )
    if isinstance(prompt, list):  # conversational prompt + completion
        done = (
            completion
            if isinstance(completion, list)
            else [{"role": "assistant", "content": completion}]
        )
        return _chat_segments(prompt + done, tokenizer, n_context=len(prompt))
    if fmt.template is not None:
        from aha.data.templates import render_prompt

        if fmt.question_key not in row:
            raise ValueError(
                f"data.template is set but the row has no '{fmt.question_key}' field; set "
                "data.question_key, or data.template=null to use the row's prompt as is"
            )
        prompt = render_prompt(
            str(row[fmt.question_key]),
            fmt.template,
            tokenizer=tokenizer,
            system=fmt.system,
            prefill=fmt.prefill,
        )
    elif prompt is None:
        raise ValueError(
            f"row has no '{fmt.prompt_key}' field (keys: {sorted(row)}); set data.prompt_key, or "
            "data.template to render the prompt from the question"
        )
    return [(str(prompt), False), (str(completion), True)]


def _chat_segments(
    messages: list[dict], tokenizer, n_context: int | None
) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, trained?) pieces by rendering growing prefixes.

    Assistant turn i contributes render(messages[:i+1]) minus render(messages[:i], generation prompt on): its
    content plus the template's end-of-turn marker. A template that rewrites earlier turns (e.g. one that drops
    past reasoning) breaks the prefix property and is refused rather than mis-masked."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "chat-format rows need a tokenizer with a chat template and this model's has none; use "
            "prompt/completion rows for base models"
        )
    if messages and messages[0].get("role") == "assistant":
        raise ValueError(
            "a chat row must start with a system or user message before the first assistant turn"
        )
    render = lambda msgs, gen: tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=gen
    )
    out, done = [], ""
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant" or (n_context is not None and i < n_context):
            continue
        before, after = render(messages[:i], True), render(messages[: i + 1], False)
        if not (before.startswith(done) and after.startswith(before)):
            raise ValueError(
                "the chat template renders earlier turns differently once later turns are added, so "
                "assistant tokens cannot be located; train on one assistant turn per row"
            )
        out += [(before[len(done) :], False), (after[len(before) :], True)]
        done = after
    if not out:
        raise ValueError("chat row has no assistant message to train on")
    tail = render(messages, False)[len(done) :]
    return out + ([(tail, False)] if tail else [])


def build_examples(
    rows: list[dict], tokenizer, fmt: RowFormat, max_length: int
) -> tuple[list[Example], dict]:
    """Rows -> examples of at most max_length tokens with >= 1 trained token; stats count what was cut/dropped."""
    from aha.data.read import DataError

    examples, stats = [], {"rows": len(rows), "truncated": 0, "dropped": 0}
    for n, row in enumerate(rows, 1):
        try:
            ex = to_example(row, tokenizer, fmt)
        # what only the tokenizer shows (no chat template, a template that rewrites)
        except ValueError as e:
            raise DataError(f"SFT data, row {n}: {e}") from None
        if len(ex) > max_length:
            ex = Example(ex.input_ids[:max_length], ex.loss_mask[:max_length])
            stats["truncated"] += 1
        if sum(ex.loss_mask[1:]) == 0:  # the first token is never a target
            stats["dropped"] += 1
            continue
        examples.append(ex)
    stats["examples"] = len(examples)
    return examples, stats


# ---- packing -----------------------------------------------------------------------------------------------
def pack(lengths: list[int], max_length: int, packing: bool = True) -> list[list[int]]:
    """Index lists, one per row: first-fit in the given order into rows of <= max_length tokens
    (packing=False: one document per row). Deterministic, so a resumed run packs identically."""
    if not packing:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        if n > max_length:
            raise ValueError(
                f"document {i} has {n} tokens > max_length {max_length}; truncate it first"
            )
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max_length - n)
    return rows


def collate(examples: list[Example], rows: list[list[int]], pad_id: int) -> PackedBatch:
    """Packed rows (index lists into examples) -> right-padded tensors (see PackedBatch)."""
    import torch

    L = max(sum(len(examples[i]) for i in row) for row in rows)
    R = len(rows)
    ids = torch.full((R, L), pad_id, dtype=torch.long)
    pos = torch.zeros((R, L), dtype=torch.long)
    seg = torch.full((R, L), -1, dtype=torch.long)
    trained = torch.zeros((R, L), dtype=torch.bool)
    for r, row in enumerate(rows):
        at = 0
        for d, i in enumerate(row):
            ex, n = examples[i], len(examples[i])
            ids[r, at : at + n] = torch.tensor(ex.input_ids)
            pos[r, at : at + n] = torch.arange(n)
            seg[r, at : at + n] = d
            trained[r, at : at + n] = torch.tensor(ex.loss_mask, dtype=torch.bool)
            at += n
    same_doc = (seg[:, 1:] == seg[:, :-1]) & (
        seg[:, 1:] >= 0
    )  # (R, L-1): target t+1 in the doc of t
    return PackedBatch(ids, pos, seg, (trained[:, 1:] & same_doc).float())


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(R, L) segment ids -> (R, 1, L, L) additive mask: 0 where q may attend k (same segment, k <= q), else
    the dtype's minimum (float32 by default). Padding (-1) attends to padding only, so no softmax row is
    empty."""
    import torch

    dtype = dtype or torch.float32
    L = segment_ids.shape[1]
    causal = torch.ones((L, L), dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & causal  # (R, L, L)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
