"""Turn completions into padded training tensors and split them into micro-batches.

A sequence is prompt + completion, right-padded: positions are then plain aranges, identical to generation.
`loss_mask` marks the completion tokens whose logprobs enter the loss. `prompt_lens` lets the training forward
run each distinct prompt once for its G completions (aha.train.forward); None means "no prompt known".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rollout.base import SamplingParams


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L) prompt + completion, right-padded
    attention_mask: torch.Tensor  # (B, L)
    loss_mask: (
        torch.Tensor
    )  # (B, L-1) float: 1 where target input_ids[:, t+1] is a completion token
    advantages: (
        torch.Tensor | None
    )  # (B,) per sequence (PPO: (B, L-1) per token, set by its critic)
    sampler_logp: torch.Tensor  # (B, L-1) the engine's logprobs at the same positions (0 elsewhere)
    old_logp: torch.Tensor | None = None  # (B, L-1) for mu > 1
    ref_logp: torch.Tensor | None = None  # (B, L-1) when beta > 0
    # (B,) long: row i's first prompt_lens[i] tokens are its prompt
    prompt_lens: torch.Tensor | None = None
    # what the completions were sampled with: the trainer's logprobs use params.logprob_temperature, the
    # temperature at which the engine reported sampler_logp
    params: SamplingParams | None = None

    def __len__(self):
        return self.input_ids.shape[0]

    def select(self, idx: list[int]) -> Batch:
        """Rows `idx`, with the padding columns that no selected row uses cut off."""
        t = torch.tensor(idx, dtype=torch.long)
        L = int(self.attention_mask[t].sum(1).max())
        # one indexing op each, so the results are contiguous (Batch.to pins them for a non-blocking copy)
        tok = lambda x: x[t, :L]  # (b, L) tensors
        pos = lambda x: None if x is None else x[t, : L - 1]  # (b, L-1) per-target tensors
        return Batch(
            tok(self.input_ids),
            tok(self.attention_mask),
            pos(self.loss_mask),
            None if self.advantages is None else self.advantages[t],
            pos(self.sampler_logp),
            pos(self.old_logp),
            pos(self.ref_logp),
            None if self.prompt_lens is None else self.prompt_lens[t],
            self.params,
        )

    @property
    def logprob_temperature(self) -> float:
        return 1.0 if self.params is None else self.params.logprob_temperature

    def to(self, device) -> Batch:
        """To a GPU through pinned memory and without blocking: a copy from pageable memory would first wait for
        the work the GPU has queued (the update queues the next micro-batch while the GPU runs this one)."""
        dev = torch.device(device)
        pin = dev.type == "cuda"

        def mv(x):
            if not isinstance(x, torch.Tensor):
                return x
            if pin and x.device.type == "cpu":
                x = x.pin_memory()
            return x.to(dev, non_blocking=pin)

        return type(self)(**{f: mv(getattr(self, f)) for f in self.__dataclass_fields__})


def build_batch(
    prompts: list[list[int]],
    completions,
    advantages: torch.Tensor | None,
    pad_id: int,
    mask_truncated: bool = False,
    params: SamplingParams | None = None,
) -> Batch:
    """prompts: token ids per prompt; completions: list[Completion] (prompt_index into prompts); params: the
    SamplingParams they were generated with (None: logprobs at temperature 1)."""
    seqs = [prompts[c.prompt_index] + c.token_ids for c in completions]
    B, L = len(seqs), max(len(s) for s in seqs)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention = torch.zeros((B, L), dtype=torch.long)
    loss_mask = torch.zeros((B, L - 1))
    sampler_logp = torch.zeros((B, L - 1))
    for i, (s, c) in enumerate(zip(seqs, completions)):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention[i, : len(s)] = 1
        p, n = len(prompts[c.prompt_index]), len(c.token_ids)
        if n and not (mask_truncated and c.finish_reason == "length"):
            loss_mask[i, p - 1 : p - 1 + n] = 1.0  # target at t+1 = completion token
        if n:
            sampler_logp[i, p - 1 : p - 1 + n] = torch.tensor(c.logprobs, dtype=torch.float32)
    prompt_lens = torch.tensor(
        [len(prompts[c.prompt_index]) for c in completions], dtype=torch.long
    )
    return Batch(
        input_ids,
        attention,
        loss_mask,
        None if advantages is None else advantages.float(),
        sampler_logp,
        prompt_lens=prompt_lens,
        params=params,
    )


def group_by_budget(lengths: list[int], size: int, token_budget: int = 0) -> list[list[int]]:
    """Consecutive index groups of at most `size` items whose padded size (max length x count) stays within
    `token_budget` when it is > 0 (a single longer item still gets a group of its own)."""
    out, cur, cur_max = [], [], 0
    for i, n in enumerate(lengths):
        new_max = max(cur_max, n)
        if cur and (len(cur) == size or (token_budget and new_max * (len(cur) + 1) > token_budget)):
            out.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    return out + ([cur] if cur else [])


def micro_batches(batch: Batch, size: int, token_budget: int = 0) -> list[list[int]]:
    """Index lists of at most `size` sequences; with a token budget, also at most `token_budget` padded tokens."""
    return group_by_budget(batch.attention_mask.sum(1).tolist(), size, token_budget)
