"""FastEngine: continuous-batching generation over the model's live parameters (the Engine protocol).

    engine = FastEngine(model, tokenizer)
    completions = engine.generate(prompt_token_ids, SamplingParams(n=8, temperature=1.0, max_tokens=512))
    engine.release()            # give the KV cache and CUDA graphs back before the training phase

Loop: admit (prefill each prompt once, sample its n first tokens, share its KV pages) -> run `sync_every`
decode steps without looking at the device -> queue a copy of every row's new tokens, logprobs and `active`
flag (batch.snapshot) -> read the copy queued one round earlier (so the GPU always has a round of work
queued) -> push those tokens to each completion's Tracker (stop ids, stop strings, on_tokens, abort: see
aha.rollout.stops) -> free the rows and pages of finished completions (rows that end by length are known on
the host exactly and freed at once; others are seen within two rounds) -> compact rows so the batch bucket
shrinks -> admit again. A completion cut on the host (stop string, abort) has its row switched off.

Streaming: `on_tokens(i, new_ids)` is called once per sync round for each completion that produced tokens.
Sampling noise is keyed by (seed, completion index, token index) (noise.py): with the same seed and inputs the
samples repeat on one device whatever the batch size, cache size or aborted neighbours; they differ from HF's
(different random streams). Same outputs as HFEngine otherwise (prompt-major, logprob of the sampled
distribution before top-p/top-k, greedy + unscaled logprob at T = 0). Unsupported architectures fall back to
HFEngine with a warning.

LoRA: a peft-wrapped model works (its Linear wrappers are called, dropout off in eval mode); the CUDA graphs
are re-captured when parameter storages or adapter flags (merged / disabled / active) change.
"""

from __future__ import annotations

import time
import warnings
from collections import deque

import torch

from ..base import Completion, OnTokens, SamplingParams
from ..hf import HFEngine
from ..stops import Tracker
from .batch import Batch, bucket_for
from .kv_cache import KVCache, PageAllocator
from .model_runner import ModelRunner, UnsupportedModel
from .sampler import sample_torch
from .scheduler import Scheduler, cdiv


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


class FastEngine:
    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        max_num_seqs: int = 1024,
        kv_cache_fraction: float = 0.5,
        kv_cache_bytes: int | None = None,
        page_size: int = 16,
        sync_every: int = 8,
        max_prefill_tokens: int = 16384,
        cuda_graphs: bool = True,
    ):
        if not 0 < kv_cache_fraction <= 1:
            raise ValueError(f"kv_cache_fraction must be in (0, 1], got {kv_cache_fraction}")
        self.model, self.tokenizer = model, tokenizer
        self.max_num_seqs, self.kv_cache_fraction, self.kv_cache_bytes = (
            max_num_seqs,
            kv_cache_fraction,
            kv_cache_bytes,
        )
        self.page_size, self.sync_every, self.max_prefill_tokens = (
            page_size,
            sync_every,
            max_prefill_tokens,
        )
        self.cuda_graphs = cuda_graphs
        self.cache = self.batch = None
        self._key = None
        self.stats: dict = {}
        try:
            self.runner, self.fallback = ModelRunner(model), None
        except UnsupportedModel as e:
            warnings.warn(
                f"FastEngine: unsupported model ({e}); falling back to HFEngine (HF generate)",
                stacklevel=2,
            )
            self.runner, self.fallback = None, HFEngine(model, tokenizer)

    def release(self) -> None:
        """Free the KV cache, batch buffers and CUDA graphs (the next generate allocates them again)."""
        self.cache = self.batch = None
        self._key = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        on_tokens: OnTokens | None = None,
    ) -> list[Completion]:
        if self.fallback is not None:
            return self.fallback.generate(prompt_token_ids, params, on_tokens)
        if not prompt_token_ids or any(len(p) == 0 for p in prompt_token_ids):
            raise ValueError("generate() needs a non-empty list of non-empty prompts")
        V = self.runner.vocab_size
        if any(t < 0 or t >= V for p in prompt_token_ids for t in p):
            raise ValueError(f"prompt token ids must be in [0, {V}) (the model's vocabulary)")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self._generate([list(p) for p in prompt_token_ids], params, on_tokens)
        finally:
            self.model.train(was_training)

    # ------------------------------------------------------------------ setup
    def _graph_key(self) -> tuple:
        flags = tuple(
            (
                getattr(m, "merged", None),
                getattr(m, "disable_adapters", None),
                tuple(getattr(m, "active_adapters", ()) or ()),
            )
            for m in self.model.modules()
            if hasattr(m, "lora_A")
        )
        return self.runner.params_key() + flags

    def _setup(self, prompts, params, rows):
        r, S = self.runner, self.page_size
        dev = r.device
        longest = max(len(p) for p in prompts)
        r.ensure_rope(longest + params.max_tokens)
        bpp = KVCache.bytes_per_page(r.num_layers, S, r.num_kv_heads, r.head_dim, r.dtype)
        need = 1 + rows * cdiv(longest + params.max_tokens - 1, S)
        if self.kv_cache_bytes is not None:
            budget = self.kv_cache_bytes
        elif dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
            budget = self.kv_cache_fraction * (
                free + (self.cache.nbytes if self.cache is not None else 0)
            )
        else:
            budget = 1 << 30
        pages = max(2, min(need, int(budget // bpp)))
        c = self.cache
        if (
            c is None
            or c.k.dtype != r.dtype
            or c.k.device != dev
            or (c.num_pages < pages and c.num_pages < need)
        ):
            self.cache = self.batch = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            self.cache = KVCache(r.num_layers, pages, S, r.num_kv_heads, r.head_dim, r.dtype, dev)
        width = cdiv(longest + params.max_tokens, S)
        b = self.batch
        if b is None or b.cache is not self.cache or b.width < width or b.rows < rows:
            self.batch = Batch(
                r, self.cache, max(rows, self.max_num_seqs), self.sync_every + 1, _pow2(width)
            )
        key = self._graph_key()
        if key != self._key:
            self.batch.graphs.clear()
            self._key = key
        return bpp, width

    # ------------------------------------------------------------------ the loop
    def _generate(self, prompts, params: SamplingParams, on_tokens) -> list[Completion]:
        t0 = time.perf_counter()
        rows = min(self.max_num_seqs, len(prompts) * params.n)
        bpp, width = self._setup(prompts, params, rows)
        cuda = self.runner.device.type == "cuda"
        sched = Scheduler(
            prompts,
            params.n,
            params.max_tokens,
            self.page_size,
            rows,
            PageAllocator(self.cache.num_pages),
        )
        sched.check_fits(bpp)
        trackers = [
            Tracker(i, params, self.tokenizer, on_tokens) for i in range(len(prompts) * params.n)
        ]
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        batch = self.batch
        batch.configure(params, seed, width)
        if cuda and self.cuda_graphs:
            batch.capture(bucket_for(rows, batch.rows))
        inflight: deque = deque()  # snapshots queued on the device, oldest first
        steps = prefill_tokens = 0
        while True:
            units = sched.admit()
            if units:
                prefill_tokens += self._prefill(units, prompts, params)
            if sched.live:
                self._maybe_compact(sched)
                b = bucket_for(max(sched.live) + 1, batch.rows)
                n = min(self.sync_every, max(s.steps_left for s in sched.live.values()))
                for _ in range(n):
                    batch.step(b)
                steps += n
                for s in sched.live.values():
                    s.steps_left -= n
                inflight.append(self._snapshot(sched, b, cuda))
                for s in [s for s in sched.live.values() if s.steps_left <= 0]:
                    sched.finish(s)  # by length: its last tokens come with the snapshot just queued
            elif not inflight:
                if sched.pending:
                    raise RuntimeError("FastEngine: admission stalled with free cache (a bug)")
                break
            while inflight and (len(inflight) > 1 or not sched.live):
                self._read(inflight.popleft(), sched, trackers)
        results = [trackers[i].completion(i // params.n) for i in range(len(prompts) * params.n)]
        secs = time.perf_counter() - t0
        self.stats = dict(
            decode_steps=steps,
            prefill_tokens=prefill_tokens,
            seconds=secs,
            tokens_per_s=sum(len(c.token_ids) for c in results) / max(secs, 1e-9),
            kv_cache_mib=self.cache.nbytes / 2**20,
            mode=batch.mode,
        )
        return results

    def _to_dev(self, x, dtype=torch.long):
        t = torch.tensor(x, dtype=dtype)
        if self.runner.device.type == "cuda":
            return t.pin_memory().to(self.runner.device, non_blocking=True)
        return t

    def _prefill(self, units, prompts, params) -> int:
        total, chunk, size = 0, [], 0
        for i, u in enumerate(units):
            chunk.append(u)
            size += len(prompts[u.prompt_index])
            if size >= self.max_prefill_tokens or i == len(units) - 1:
                total += self._prefill_chunk(chunk, prompts, params)
                chunk, size = [], 0
        return total

    def _prefill_chunk(self, units, prompts, params) -> int:
        S = self.page_size
        toks, pos, slots, lens, rep, src, dst = [], [], [], [], [], [], []
        for ui, u in enumerate(units):
            p, s0 = prompts[u.prompt_index], u.seqs[0]
            toks += p
            pos += range(len(p))
            slots += [s0.pages[i // S] * S + i % S for i in range(len(p))]
            lens.append(len(p))
            rep += [ui] * len(u.seqs)
            if len(p) % S:  # the partly filled last prompt page is private: copy it
                src += [s0.pages[s0.n_shared]] * (len(u.seqs) - 1)
                dst += [s.pages[s.n_shared] for s in u.seqs[1:]]
        logits = self.runner.prefill(
            self._to_dev(toks), self._to_dev(pos), self._to_dev(slots), lens, self.cache
        )  # (P, V)
        seqs = [s for u in units for s in u.seqs]
        seq_ids = self._to_dev([s.index for s in seqs])
        # token 0 of each completion, keyed like every other token (the torch sampler: same noise bits)
        tok, lp = sample_torch(
            logits[self._to_dev(rep)],
            params.temperature,
            params.top_p,
            params.top_k,
            keys=(self.batch.seed, seq_ids, torch.zeros_like(seq_ids)),
        )
        if src:
            self.cache.copy_page(self._to_dev(src), self._to_dev(dst))
        width = max(len(s.pages) for s in seqs)
        tables = [s.pages + [0] * (width - len(s.pages)) for s in seqs]
        self.batch.admit(
            self._to_dev([s.row for s in seqs]),
            tok,
            lp,
            self._to_dev([s.prompt_len for s in seqs]),
            1,
            seq_ids,
            self._to_dev(tables, torch.int32),
            fresh=True,
        )
        return len(toks)

    def _maybe_compact(self, sched) -> None:
        live = sorted(sched.live)
        hi = live[-1] + 1
        if bucket_for(hi, self.batch.rows) <= bucket_for(len(live), self.batch.rows):
            return
        self.batch.compact(self._to_dev(live), hi)
        sched.relabel(live)

    def _snapshot(self, sched, b: int, cuda: bool):
        """Queue the copy of rows [0, b)'s new tokens to the host; (event, packed, logprobs, row -> seq)."""
        mapping = dict(sched.live)
        packed, lps = self.batch.snapshot(b)
        if not cuda:
            return None, packed, lps, mapping
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in (packed, lps)]
        for h, t in zip(host, (packed, lps)):
            h.copy_(t, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        return ev, host[0], host[1], mapping

    def _read(self, snap, sched, trackers) -> None:
        """Push a snapshot's tokens to the trackers; free the rows of completions that ended on the host."""
        ev, packed, lps, mapping = snap
        if ev is not None:
            ev.synchronize()
        W = self.batch.ring
        packed, lps = packed.tolist(), lps.tolist()
        cut = []
        for row, s in mapping.items():
            t = trackers[s.index]
            if t.done:
                continue
            n = packed[row][W]
            t.push(packed[row][:n], lps[row][:n])
            if t.done and sched.live.get(s.row) is s:
                cut.append(
                    s.row
                )  # a stop id or length (row already off), a stop string or an abort
                sched.finish(s)
        if cut:
            self.batch.deactivate(self._to_dev(cut))
