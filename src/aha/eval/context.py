"""Prompts against the model's context: which ones an evaluation keeps, and how many new tokens they get.

    keep, max_new = fit_to_context(prompt_lengths, max_new_tokens=1024, context=512)

A prompt plus its completion must fit the model's context (config.max_position_embeddings): past it a model
reads positions it was never trained on, and an engine's cache may not hold it. Untrusted data can hold a
prompt of any size, so, as verl's filter_overlong_prompts does, a prompt that cannot fit is skipped and
counted instead of failing the run (the evaluation reports `skipped_prompts`). The rule:

    every kept prompt leaves room for  need = min(max_new_tokens, context // 2)  new tokens
    max_new_tokens is lowered (once, for all prompts) to  context - the longest kept prompt

so with a roomy context nothing changes, and a max_new_tokens larger than the context (the R1 paper's 32,768
on a 4k model; the evaluation default 1,024 on the 512-token tiny-base) is cut to what fits, said in one
line, instead of dropping every prompt. A context of None (unknown, e.g. a served model) keeps everything.
Training (drop_overlong) keeps its max_new_tokens and drops the rows that cannot fit, counted in one line.
"""

from __future__ import annotations

from collections.abc import Sequence


def model_context(obj) -> int | None:
    """The context length (max_position_embeddings) of a model, or of the model behind a local engine;
    None when unknown (a served model)."""
    config = getattr(obj, "config", None) or getattr(getattr(obj, "model", None), "config", None)
    n = getattr(config, "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def drop_overlong(rows, render, tokenizer, context: int | None, max_new_tokens: int):
    """-> (the training rows whose prompt + max_new_tokens fits the context, how many were dropped).

    Training keeps its max_new_tokens (the memory plan and the rollouts' statistics assume it), so a row that
    cannot fit is dropped instead. Generated (procedural) datasets are not lists and pass as they are: their
    prompts are short by construction. render: question -> prompt text."""
    if context is None or not isinstance(rows, list) or not rows:
        return rows, 0
    ids = tokenizer([render(r["question"]) for r in rows], add_special_tokens=False).input_ids
    kept = [r for r, x in zip(rows, ids) if len(x) + max_new_tokens <= context]
    if not kept:
        raise ValueError(
            f"no training prompt fits the model's {context}-token context with "
            f"sampling.max_new_tokens={max_new_tokens} (the shortest has {min(map(len, ids))} "
            "tokens); lower sampling.max_new_tokens or use shorter prompts"
        )
    return kept, len(rows) - len(kept)


def fit_to_context(
    lengths: Sequence[int], max_new_tokens: int, context: int | None
) -> tuple[list[int], int]:
    """-> (indices of the prompts kept, the max_new_tokens they get). Raises ValueError when none fits."""
    if context is None:
        return list(range(len(lengths))), max_new_tokens
    need = max(1, min(max_new_tokens, context // 2))
    keep = [i for i, n in enumerate(lengths) if n + need <= context]
    if not keep:
        raise ValueError(
            f"no prompt fits the model's {context}-token context with room for {need} new tokens "
            f"(the shortest has {min(lengths)} tokens); use shorter prompts or a longer-context model"
        )
    return keep, min(max_new_tokens, context - max(lengths[i] for i in keep))
