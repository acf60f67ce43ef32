"""Continuous batching: which sequence runs in which batch row, and which KV pages it owns (host side).

Sequences are admitted prompt-major in units of (one prompt, k of its samples): the prompt is prefilled once
per unit and its full pages are shared by the k samples. A unit is admitted only when every sample can be
given pages for its whole length (prompt + max_tokens - 1 cached positions), so decoding never runs out of
pages and nothing is ever preempted. Freed rows and pages are reused by the next admission.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from .kv_cache import PageAllocator


@dataclass(eq=False)
class Seq:
    index: int  # position in the prompt-major result list
    prompt_index: int
    prompt_len: int
    row: int
    pages: list[int]  # page table in position order: shared prompt pages, then private pages
    n_shared: int
    steps_left: int  # decode steps until max_tokens (host knows it exactly)


@dataclass
class Unit:
    prompt_index: int
    seqs: list[Seq] = field(default_factory=list)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class Scheduler:
    def __init__(
        self,
        prompts: list[list[int]],
        n: int,
        max_tokens: int,
        page_size: int,
        rows: int,
        allocator: PageAllocator,
    ):
        self.prompts, self.n, self.max_tokens, self.page = prompts, n, max_tokens, page_size
        self.alloc = allocator
        self.pending = deque(
            [i, n] for i in range(len(prompts))
        )  # [prompt index, samples not admitted]
        self.free_rows = list(range(rows))
        self.live: dict[int, Seq] = {}  # row -> sequence

    def pages_of(self, prompt_len: int) -> tuple[int, int]:
        """(shared, private) pages of one sample: prompt_len + max_tokens - 1 cached positions."""
        total = cdiv(prompt_len + self.max_tokens - 1, self.page)
        shared = prompt_len // self.page
        return shared, total - shared

    def check_fits(self, bytes_per_page: int) -> None:
        longest = max(len(p) for p in self.prompts)
        need = sum(self.pages_of(longest))
        if need > self.alloc.capacity:
            raise ValueError(
                f"one sequence of {longest} prompt + {self.max_tokens} new tokens needs "
                f"{need * bytes_per_page / 2**20:.1f} MiB of KV cache but the budget holds "
                f"{self.alloc.capacity * bytes_per_page / 2**20:.1f} MiB; raise kv_cache_fraction/kv_cache_bytes "
                f"or lower max_tokens"
            )

    def admit(self) -> list[Unit]:
        units = []
        while self.pending and self.free_rows:
            prompt_index, left = self.pending[0]
            plen = len(self.prompts[prompt_index])
            n_shared, n_priv = self.pages_of(plen)
            k = min(left, len(self.free_rows))
            if n_priv:
                k = min(k, (self.alloc.num_free - n_shared) // n_priv)
            if k <= 0:
                break
            shared = self.alloc.alloc(n_shared)
            self.alloc.share(shared, k - 1)
            unit = Unit(prompt_index)
            for j in range(k):
                row = heapq.heappop(self.free_rows)
                seq = Seq(
                    index=prompt_index * self.n + (self.n - left) + j,
                    prompt_index=prompt_index,
                    prompt_len=plen,
                    row=row,
                    pages=shared + self.alloc.alloc(n_priv),
                    n_shared=n_shared,
                    steps_left=self.max_tokens - 1,
                )
                self.live[row] = seq
                unit.seqs.append(seq)
            units.append(unit)
            if k == left:
                self.pending.popleft()
            else:
                self.pending[0][1] = left - k
        return units

    def finish(self, seq: Seq) -> None:
        del self.live[seq.row]
        heapq.heappush(self.free_rows, seq.row)
        self.alloc.release(seq.pages)

    def relabel(self, order: list[int]) -> None:
        """Live rows `order` move to rows 0..len(order)-1 (batch compaction)."""
        seqs = [self.live[r] for r in order]
        rows = len(self.free_rows) + len(self.live)
        self.live = {}
        for new, seq in enumerate(seqs):
            seq.row = new
            self.live[new] = seq
        self.free_rows = list(range(len(seqs), rows))
