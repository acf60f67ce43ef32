"""Continuous batching: which sequence runs in which batch row, and which KV pages it owns (host side).

Sequences are admitted prompt-major in units of (one prompt, k of its samples): the prompt is prefilled once
per unit and its full pages are shared by the k samples. Pages are allocated as tokens are written, not
reserved for prompt + max_tokens at admission: before each round of n decode steps `grow` gives every running
sequence the pages its next n tokens need. When the cache runs short, the running sequence admitted last (the
highest completion index) is preempted by recompute: its row and pages are freed at once, and once the host
holds all its tokens (the snapshots in flight deliver them) it waits in `resume` to be prefilled again with
prompt + its tokens and to continue. The earliest sequence is never preempted while others run, and one
sequence alone always fits (check_fits), so every round makes progress: no deadlock, and no livelock (a resumed
sequence keeps its tokens and runs at least one round).

Admission order: preempted sequences first (lowest index first), new units only when none waits, and only while
the free pages also cover the coming round's growth of the running sequences (so admitting never forces an
immediate preemption). Freed rows and pages are reused by the next admission, so the batch stays full while a
few long sequences finish.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from .kv_cache import PageAllocator


@dataclass(eq=False)
class Seq:
    index: int  # position in the prompt-major result list; also the priority (lower runs first)
    prompt_index: int
    prompt_len: int
    gen: int = 1  # tokens generated, as far as the host knows (exact while the row runs)
    row: int = -1
    pages: list[int] = field(
        default_factory=list
    )  # page table in position order (shared prompt first)
    n_shared: int = 0

    def __lt__(self, other: Seq) -> bool:  # heap order of the resume queue
        return self.index < other.index


@dataclass
class Unit:
    prompt_index: int
    seqs: list[Seq] = field(default_factory=list)
    resume: bool = False  # a preempted sequence: prefill prompt + its tokens, sample nothing


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
        self.pending = deque([i, n] for i in range(len(prompts)))  # [prompt, samples not admitted]
        self.free_rows = list(range(rows))
        self.live: dict[int, Seq] = {}  # row -> sequence
        self.waiting: list[
            tuple[int, Seq]
        ] = []  # preempted, tokens in flight: (last snapshot, seq)
        self.resume: list[Seq] = []  # heap: preempted, all tokens on the host
        self.preemptions = 0
        self.peak_pages = 0

    def pages_for(self, prompt_len: int, gen: int, steps: int) -> int:
        """Pages that hold the cache after `steps` more decode steps from `gen` generated tokens: a row at
        gen tokens has prompt_len + gen - 1 positions cached, one more per step, up to max_tokens."""
        return cdiv(prompt_len + min(gen + steps, self.max_tokens) - 1, self.page)

    def check_fits(self, bytes_per_page: int) -> None:
        longest = max(len(p) for p in self.prompts)
        need = self.pages_for(longest, self.max_tokens, 0)
        if need > self.alloc.capacity:
            cap = self.alloc.capacity
            raise ValueError(
                f"the KV cache ({cap * bytes_per_page / 2**20:.3g} MiB, {cap * self.page} tokens) cannot "
                f"hold one sequence of {longest} prompt + max_tokens {self.max_tokens} new tokens "
                f"({need * bytes_per_page / 2**20:.3g} MiB): raise kv_cache_bytes / kv_cache_fraction "
                f"or lower max_tokens"
            )

    def _growth(self, steps: int) -> int:
        return sum(
            max(0, self.pages_for(s.prompt_len, s.gen, steps) - len(s.pages))
            for s in self.live.values()
        )

    def _place(self, seq: Seq) -> None:
        seq.row = heapq.heappop(self.free_rows)
        self.live[seq.row] = seq

    def admit(self, steps: int) -> list[Unit]:
        """Units to prefill now, given that the coming round runs up to `steps` decode steps."""
        units: list[Unit] = []
        reserve = self._growth(steps)
        while self.resume and self.free_rows:
            s = self.resume[0]
            want = self.pages_for(s.prompt_len, s.gen, steps)
            if self.alloc.num_free - want < reserve and self.live:
                return units
            heapq.heappop(self.resume)
            s.pages, s.n_shared = self.alloc.alloc(want), 0
            self._place(s)
            units.append(Unit(s.prompt_index, [s], resume=True))
        if self.resume or self.waiting:
            return units  # preempted sequences go first
        while self.pending and self.free_rows:
            prompt_index, left = self.pending[0]
            plen = len(self.prompts[prompt_index])
            n_shared = plen // self.page
            n_priv = self.pages_for(plen, 1, steps) - n_shared
            room = self.alloc.num_free - n_shared - (reserve if self.live else 0)
            k = min(left, len(self.free_rows))
            if n_priv:
                k = min(k, room // n_priv)
            if k <= 0 or room < 0:
                break
            shared = self.alloc.alloc(n_shared)
            self.alloc.share(shared, k - 1)
            unit = Unit(prompt_index)
            for j in range(k):
                s = Seq(prompt_index * self.n + (self.n - left) + j, prompt_index, plen)
                s.pages, s.n_shared = shared + self.alloc.alloc(n_priv), n_shared
                self._place(s)
                unit.seqs.append(s)
            units.append(unit)
            if k == left:
                self.pending.popleft()
            else:
                self.pending[0][1] = left - k
        self._note_usage()
        return units

    def grow(
        self, steps: int, snapshot_no: int
    ) -> tuple[list[tuple[int, int, int]], dict[int, Seq]]:
        """Pages for the coming round of `steps` steps, earliest sequence first; preempts the latest running
        sequences while pages are short. Returns the new table entries (row, column, page) and the preempted
        sequences by their former row: the caller switches those rows off after queuing snapshot
        `snapshot_no`, which must deliver their last tokens."""
        entries, preempted = [], {}
        for s in sorted(self.live.values(), key=lambda s: s.index):
            if self.live.get(s.row) is not s:
                continue  # preempted below, for an earlier sequence
            want = self.pages_for(s.prompt_len, s.gen, steps) - len(s.pages)
            while want > self.alloc.num_free:
                victim = max(self.live.values(), key=lambda v: v.index)
                if victim is s and len(self.live) == 1:
                    raise RuntimeError("FastEngine: one sequence does not fit the KV cache (a bug)")
                preempted[victim.row] = victim
                self.preempt(victim, snapshot_no)
                if victim is s:
                    break
            else:
                new = self.alloc.alloc(max(0, want))
                entries += [(s.row, len(s.pages) + j, p) for j, p in enumerate(new)]
                s.pages += new
        self._note_usage()
        return entries, preempted

    def preempt(self, seq: Seq, snapshot_no: int) -> None:
        self.finish(seq)
        self.waiting.append((snapshot_no, seq))
        self.preemptions += 1

    def ready(self, snapshot_no: int, tokens_of) -> None:
        """Snapshots up to snapshot_no are read: preempted sequences whose tokens are all on the host queue to
        resume. tokens_of(seq): its token count, or None when its last tokens ended it (stop, length, abort)."""
        keep = []
        for no, s in self.waiting:
            if no > snapshot_no:
                keep.append((no, s))
            elif (gen := tokens_of(s)) is not None:
                s.gen = gen
                heapq.heappush(self.resume, s)
        self.waiting = keep

    def finish(self, seq: Seq) -> None:
        del self.live[seq.row]
        heapq.heappush(self.free_rows, seq.row)
        self.alloc.release(seq.pages)
        seq.pages, seq.row = [], -1

    def relabel(self, order: list[int]) -> None:
        """Live rows `order` move to rows 0..len(order)-1 (batch compaction)."""
        seqs = [self.live[r] for r in order]
        rows = len(self.free_rows) + len(self.live)
        self.live = {}
        for new, seq in enumerate(seqs):
            seq.row = new
            self.live[new] = seq
        self.free_rows = list(range(len(seqs), rows))

    def _note_usage(self) -> None:
        self.peak_pages = max(self.peak_pages, self.alloc.capacity - self.alloc.num_free)

    @property
    def busy(self) -> bool:
        return bool(self.live or self.pending or self.waiting or self.resume)
