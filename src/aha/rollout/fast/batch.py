"""The running batch on the device: per-row decode state and the decode step (eager, or a CUDA-graph replay).

Row state (R rows): tok (last sampled token), pos (its position = cache length before it), active, ngen
(tokens generated), seen (tokens already copied out to the host), seq (the completion's prompt-major index,
which keys its sampling noise), the page table, and a ring of the last W sampled tokens/logprobs
out_tok/out_lp (R, W+1) whose last column is a trash column for inactive rows. One step over rows [0, b):

    logits = decode(tok, pos)                   inactive rows compute too (fixed shapes) but write their K/V
                                                to the trash page 0 and their outputs to the trash column
    tok', lp = sample(logits, keys(seed, seq, ngen))   fused Triton sampler, or the torch sampler
    ring[ngen % W] = tok', lp;  ngen += active;  pos += active
    active &= not (tok' is a stop id or ngen >= max_tokens)

Everything stays on the device, so the host never waits on a step. After each round of at most W - 1 steps
`snapshot` gathers every row's tokens since `seen` (at most W: the round's steps plus a prefill token) with
`active`, for one copy to the host (see engine.py). With the fused sampler the whole step is one CUDA graph per
batch bucket; with top-p/top-k the graph covers the forward and sampling runs eagerly.
"""

from __future__ import annotations

import torch

from ..._triton import use_triton
from .attention import decode_splits
from .sampler import sample_fused, sample_torch

BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def to_dev(x, device: torch.device, dtype=torch.long) -> torch.Tensor:
    """A host list as a tensor on `device` (through pinned memory, asynchronously, on CUDA)."""
    t = torch.tensor(x, dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def bucket_for(n: int, rows: int) -> int:
    for b in BUCKETS:
        if b >= n:
            return min(b, rows)
    return min(rows, -(-n // 256) * 256)


class Batch:
    def __init__(self, runner, cache, rows: int, ring: int, table_width: int):
        dev = runner.device
        self.runner, self.cache, self.rows = runner, cache, rows
        self.ring, self.width = ring, table_width
        z = dict(device=dev)
        self.tok = torch.zeros(rows, dtype=torch.long, **z)
        self.pos = torch.zeros(rows, dtype=torch.long, **z)
        self.active = torch.zeros(rows, dtype=torch.bool, **z)
        self.ngen = torch.zeros(rows, dtype=torch.long, **z)
        self.seen = torch.zeros(rows, dtype=torch.long, **z)
        self.seq = torch.zeros(rows, dtype=torch.long, **z)
        self.table = torch.zeros((rows, table_width), dtype=torch.int32, **z)
        self.out_tok = torch.zeros((rows, ring + 1), dtype=torch.long, **z)
        self.out_lp = torch.zeros((rows, ring + 1), dtype=torch.float32, **z)
        # decode attention's split counters (the last split merges; each call leaves them zero)
        self.merge_cnt = torch.zeros(rows * runner.num_kv_heads, dtype=torch.int32, **z)
        self.max_new = torch.ones(1, dtype=torch.long, **z)
        self.is_stop = torch.zeros(runner.vocab_size, dtype=torch.bool, **z)
        self.temp = torch.ones(1, dtype=torch.float32, **z)
        self.seed = torch.zeros(1, dtype=torch.long, **z)
        self.graphs: dict[tuple[int, str], tuple] = {}
        self.capturable: set[tuple[int, str]] = set()  # warmed up, captured at first use
        self.pool = self.side = None
        self.num_sms = (
            torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 1
        )
        self.params, self.mode = None, "logits"

    # ------------------------------------------------------------------ per-generate configuration
    def configure(self, params, seed: int, width: int) -> None:
        """Reset all rows and load this call's sampling settings into the (graph-visible) device tensors."""
        self.params, self.cur_width = params, width
        for t in (self.active, self.pos, self.ngen, self.seen, self.table):
            t.zero_()
        self.max_new.fill_(params.max_tokens)
        self.temp.fill_(params.logprob_temperature)  # 1 when greedy (the kernel ignores it then)
        self.seed.fill_(seed & (2**62 - 1))
        self.is_stop.zero_()
        stop = [t for t in params.stop_token_ids if 0 <= t < self.is_stop.numel()]
        if stop:
            self.is_stop[torch.tensor(stop, device=self.is_stop.device)] = True
        fused = use_triton(self.tok) and params.top_p >= 1.0 and params.top_k == 0
        self.mode = ("greedy" if params.temperature == 0 else "sample") if fused else "logits"

    def sample(self, logits: torch.Tensor, seq: torch.Tensor, t: torch.Tensor, mode: str):
        """Token and logprob of each row of logits (B, V); the noise is keyed by (seed, seq, t)."""
        if mode == "logits":
            p = self.params
            return sample_torch(logits, p.temperature, p.top_p, p.top_k, keys=(self.seed, seq, t))
        return sample_fused(logits, self.temp, self.seed, seq, t, greedy=mode == "greedy")

    # ------------------------------------------------------------------ the step
    def forward(self, b: int) -> torch.Tensor:
        S = self.cache.page_size
        pos, act = self.pos[:b], self.active[:b]
        table = self.table[:b] if self.graphs_enabled else self.table[:b, : self.cur_width]
        page = table.gather(1, (pos // S).clamp(max=table.shape[1] - 1)[:, None]).squeeze(1).long()
        slot = torch.where(
            act, page * S + pos % S, torch.zeros_like(pos)
        )  # inactive -> trash page 0
        lens = (pos + 1).to(torch.int32)
        splits = decode_splits(
            b, self.runner.num_kv_heads, self.num_sms, fp8=self.cache.k_scale is not None
        )
        return self.runner.decode(
            self.tok[:b], pos, slot, lens, table, self.cache, splits, self.merge_cnt
        )  # (b, V)

    def sample_update(self, b: int, logits: torch.Tensor, mode: str) -> None:
        tok, lp = self.sample(logits, self.seq[:b], self.ngen[:b], mode)
        act = self.active[:b]
        col = torch.where(act, self.ngen[:b] % self.ring, torch.full_like(self.ngen[:b], self.ring))
        self.out_tok[:b].scatter_(1, col[:, None], tok[:, None])
        self.out_lp[:b].scatter_(1, col[:, None], lp[:, None])
        self.ngen[:b] += act
        self.pos[:b] += act
        done = self.is_stop[tok] | (self.ngen[:b] >= self.max_new)
        self.active[:b] &= ~done
        self.tok[:b] = tok

    def snapshot(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows [0, b): the tokens sampled since the last snapshot, for the host. Returns packed
        (b, W + 2) int64 [tokens in order (W) | count | active] and (b, W) fp32 logprobs."""
        idx = (self.seen[:b, None] + torch.arange(self.ring, device=self.seen.device)) % self.ring
        packed = torch.cat(
            [
                self.out_tok[:b].gather(1, idx),
                (self.ngen[:b] - self.seen[:b])[:, None],
                self.active[:b, None].long(),
            ],
            dim=1,
        )
        lps = self.out_lp[:b].gather(1, idx)
        self.seen[:b] = self.ngen[:b]
        return packed, lps

    @property
    def graphs_enabled(self) -> bool:
        return self.pool is not None

    def step(self, b: int) -> None:
        g = None
        if self.graphs_enabled:
            g = self.graphs.get((b, self.mode))
            if g is None and (b, self.mode) in self.capturable:
                # first use of this bucket (None: it runs eagerly)
                g = self._capture_one(b, self.mode)
        if g is None:
            self.sample_update(b, self.forward(b), self.mode)
            return
        graph, logits = g
        graph.replay()
        if self.mode == "logits":
            self.sample_update(b, logits, "logits")

    # ------------------------------------------------------------------ CUDA graphs
    def drop_graphs(self) -> None:
        """Forget the captured graphs and their memory pool: the next capture starts a new pool (torch refuses
        to capture into a pool whose graphs are all gone but whose memory is not yet freed)."""
        self.graphs.clear()
        self.capturable.clear()
        self.pool = None

    def capture(self, max_bucket: int) -> None:
        """Make every bucket <= max_bucket replayable: warm each shape up now (all rows must be inactive: warm-up
        runs are then side-effect free, writing only to the trash page and trash column), capture max_bucket now
        and each smaller bucket at its first use, mid-generation (a capture queues no work; it waits for the
        device once and takes its memory from the graphs' shared pool). A run whose rows all reach max_tokens
        together uses one bucket, and an engine released every step (engine_release) captures again each time:
        8 buckets up front took ~0.17 s of a 0.5B step."""
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        mode = self.mode
        todo = {bucket_for(n, self.rows) for n in BUCKETS if n <= max_bucket} | {max_bucket}
        for b in sorted(todo, reverse=True):
            # Warm-up (Triton compilation, cuBLAS workspaces) once per shape and process: two eager steps per
            # bucket cost more than the capture itself.
            shape = (
                b,
                mode,
                self.rows,
                self.width,
                self.ring,
                self.runner.packed,
                self.runner.dtype,
            )
            if shape not in self.runner.warmed:
                s = self._side()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    self._run(b, mode)
                    self._run(b, mode)
                torch.cuda.current_stream().wait_stream(s)
                self.runner.warmed.add(shape)
            self.capturable.add((b, mode))
        if (max_bucket, mode) not in self.graphs:
            self._capture_one(max_bucket, mode)

    def _run(self, b: int, mode: str) -> torch.Tensor | None:
        """One step over rows [0, b) as captured: the logits in "logits" mode (sampled eagerly), else None."""
        logits = self.forward(b)
        if mode == "logits":
            return logits
        self.sample_update(b, logits, mode)
        return None

    def _side(self) -> torch.cuda.Stream:
        """The one side stream for warm-ups and captures: the caching allocator reuses a freed block only on the
        stream that allocated it, so graphs captured on one stream share their pool's memory (the largest
        bucket's, not the sum of all)."""
        if self.side is None:
            self.side = torch.cuda.Stream(self.tok.device)
        return self.side

    def _capture_one(self, b: int, mode: str):
        """Capture the step for bucket b -> (graph, output), or None when its memory cannot be had (the bucket
        then runs eagerly). Not through torch.cuda.graph, which empties torch's device and pinned-host caches
        before every capture: that handed the memory the training update had just freed back to the device (and
        its pinned staging buffers), to be allocated again every step. During a capture the allocator cannot
        free cached blocks to make room, so on running out the capture is dropped, the cache emptied (what
        torch.cuda.graph does every time) and the capture tried once more."""
        s = self._side()
        for attempt in range(2):
            if attempt:
                torch.cuda.empty_cache()
            graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize()
            with torch.cuda.stream(s):
                graph.capture_begin(self.pool)
                try:
                    out = self._run(b, mode)
                except BaseException as e:
                    try:  # end the capture, keeping the error that stopped it
                        graph.capture_end()
                    except Exception:
                        pass
                    if isinstance(e, torch.cuda.OutOfMemoryError):
                        continue
                    raise
                graph.capture_end()
            torch.cuda.current_stream().wait_stream(s)
            self.graphs[(b, mode)] = (graph, out)
            return graph, out
        self.capturable.discard((b, mode))
        return None

    # ------------------------------------------------------------------ admission / compaction
    def admit(self, rows, tok, lp, pos, ngen, seq, tables, fresh: bool) -> None:
        """Sequences into `rows` (int64 (k,)): last token `tok` at position `pos`, ngen tokens generated, page
        tables (k, W). fresh: tok/lp were just sampled by the prefill (ngen = 1; the host has not seen tok);
        else a preempted sequence resumes (the host has all ngen tokens; tok is the last of them)."""
        self.tok[rows] = tok
        self.pos[rows] = pos
        self.ngen[rows] = ngen
        self.seq[rows] = seq
        if fresh:
            self.seen[rows] = ngen - 1
            self.out_tok[rows, 0] = tok
            self.out_lp[rows, 0] = lp
            self.active[rows] = ~self.is_stop[tok] & (self.max_new > 1)
        else:
            self.seen[rows] = ngen
            self.active[rows] = True
        self.table[rows] = 0
        self.table[rows, : tables.shape[1]] = tables

    def set_pages(self, rows: torch.Tensor, cols: torch.Tensor, pages: torch.Tensor) -> None:
        """table[rows[i], cols[i]] = pages[i]: pages appended to growing sequences."""
        self.table[rows, cols] = pages.to(self.table.dtype)

    def deactivate(self, rows: torch.Tensor) -> None:
        self.active[rows] = False

    def compact(self, src: torch.Tensor, hi: int) -> None:
        """Rows src (k,) move to rows 0..k-1; rows k..hi-1 become inactive."""
        k = src.shape[0]
        for t in (
            self.tok,
            self.pos,
            self.active,
            self.ngen,
            self.seen,
            self.seq,
            self.table,
            self.out_tok,
            self.out_lp,
        ):
            t[:k] = t[src]
        self.active[k:hi] = False
