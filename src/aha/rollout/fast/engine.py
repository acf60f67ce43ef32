"""FastEngine: continuous-batching generation over the model's live parameters (the Engine protocol).

    engine = FastEngine(model, tokenizer)
    completions = engine.generate(prompt_token_ids, SamplingParams(n=8, temperature=1.0, max_tokens=512))
    engine.release()            # give the KV cache and CUDA graphs back before the training phase

Loop: admit (prefill each prompt once, sample its n first tokens, share its KV pages) -> run `sync_every`
decode steps without looking at the device -> queue a copy of the rows' `active` flags -> read the copy queued
one round earlier (so the GPU always has a round of work queued) -> harvest finished rows, free their rows and
pages -> compact rows so the batch bucket shrinks -> admit again. Rows that finish by length are known on
the host exactly; rows that stop on a stop id are seen within two rounds.

Same outputs as HFEngine (prompt-major, logprob of the sampled distribution before top-p/top-k, greedy +
unscaled logprob at T = 0). With the same seed and inputs the samples repeat on one device; they differ from
HF's (different random streams). Unsupported architectures fall back to HFEngine with a warning.

LoRA: a peft-wrapped model works (its Linear wrappers are called, dropout off in eval mode); the CUDA graphs
are re-captured when parameter storages or adapter flags (merged / disabled / active) change.
"""

from __future__ import annotations

import time
import warnings
from collections import deque

import torch

from ..base import Completion, SamplingParams
from ..hf import HFEngine
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
        self, prompt_token_ids: list[list[int]], params: SamplingParams
    ) -> list[Completion]:
        if self.fallback is not None:
            return self.fallback.generate(prompt_token_ids, params)
        if not prompt_token_ids or any(len(p) == 0 for p in prompt_token_ids):
            raise ValueError("generate() needs a non-empty list of non-empty prompts")
        V = self.runner.vocab_size
        if any(t < 0 or t >= V for p in prompt_token_ids for t in p):
            raise ValueError(f"prompt token ids must be in [0, {V}) (the model's vocabulary)")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self._generate([list(p) for p in prompt_token_ids], params)
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
        if b is None or b.max_tokens < params.max_tokens or b.width < width or b.rows < rows:
            self.batch = Batch(
                r, self.cache, max(rows, self.max_num_seqs), _pow2(params.max_tokens), _pow2(width)
            )
        key = self._graph_key()
        if key != self._key:
            self.batch.graphs.clear()
            self._key = key
        return bpp, width

    # ------------------------------------------------------------------ the loop
    def _generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
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
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        batch = self.batch
        batch.configure(params, seed, width)
        if cuda and self.cuda_graphs:
            batch.capture(bucket_for(rows, batch.rows))
        gen = torch.Generator(device=self.runner.device).manual_seed(seed + 1)
        results: list = [None] * (len(prompts) * params.n)
        snapshots, harvests = deque(), []
        steps = prefill_tokens = 0
        while True:
            units = sched.admit()
            if units:
                prefill_tokens += self._prefill(units, prompts, params, gen)
            if not sched.live:
                if sched.pending:
                    raise RuntimeError("FastEngine: admission stalled with free cache (a bug)")
                break
            self._maybe_compact(sched)
            b = bucket_for(max(sched.live) + 1, batch.rows)
            n = min(self.sync_every, max(s.steps_left for s in sched.live.values()))
            for _ in range(n):
                batch.step(b)
            steps += n
            for s in sched.live.values():
                s.steps_left -= n
            done = {s for s in sched.live.values() if s.steps_left <= 0}
            snapshots.append(self._snapshot(sched, cuda))
            if len(snapshots) > 1:
                ev, flags, mapping = snapshots.popleft()
                if ev is not None:
                    ev.synchronize()
                flags = flags.tolist()
                done |= {
                    s for row, s in mapping.items() if not flags[row] and sched.live.get(s.row) is s
                }
            if done:
                harvests.append(self._harvest(sorted(done, key=lambda s: s.row), sched, cuda))
        for item in harvests:
            self._finish(item, params, prompts, results)
        self.stats = dict(
            decode_steps=steps,
            prefill_tokens=prefill_tokens,
            seconds=time.perf_counter() - t0,
            kv_cache_mib=self.cache.nbytes / 2**20,
            mode=batch.mode,
        )
        return results

    def _to_dev(self, x, dtype=torch.long):
        t = torch.tensor(x, dtype=dtype)
        if self.runner.device.type == "cuda":
            return t.pin_memory().to(self.runner.device, non_blocking=True)
        return t

    def _prefill(self, units, prompts, params, gen) -> int:
        S, total = self.page_size, 0
        chunk, size = [], 0
        for i, u in enumerate(units):
            chunk.append(u)
            size += len(prompts[u.prompt_index])
            if size >= self.max_prefill_tokens or i == len(units) - 1:
                total += self._prefill_chunk(chunk, prompts, params, gen, S)
                chunk, size = [], 0
        return total

    def _prefill_chunk(self, units, prompts, params, gen, S) -> int:
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
        tok, lp = sample_torch(
            logits[self._to_dev(rep)], params.temperature, params.top_p, params.top_k, gen
        )
        if src:
            self.cache.copy_page(self._to_dev(src), self._to_dev(dst))
        seqs = [s for u in units for s in u.seqs]
        width = max(len(s.pages) for s in seqs)
        tables = [s.pages + [0] * (width - len(s.pages)) for s in seqs]
        self.batch.admit(
            self._to_dev([s.row for s in seqs]),
            tok,
            lp,
            self._to_dev([s.prompt_len for s in seqs]),
            self._to_dev(tables, torch.int32),
        )
        return len(toks)

    def _maybe_compact(self, sched) -> None:
        live = sorted(sched.live)
        hi = live[-1] + 1
        if bucket_for(hi, self.batch.rows) <= bucket_for(len(live), self.batch.rows):
            return
        self.batch.compact(self._to_dev(live), hi)
        sched.relabel(live)

    def _snapshot(self, sched, cuda):
        mapping = dict(sched.live)
        if not cuda:
            return None, self.batch.active.clone(), mapping
        flags = torch.empty(self.batch.rows, dtype=torch.bool, pin_memory=True)
        flags.copy_(self.batch.active, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        return ev, flags, mapping

    def _harvest(self, seqs, sched, cuda):
        M = self.batch.params.max_tokens
        rows = self._to_dev([s.row for s in seqs])
        dev_out = (self.batch.out_tok[rows, :M], self.batch.out_lp[rows, :M], self.batch.ngen[rows])
        for s in seqs:
            sched.finish(s)
        if not cuda:
            return None, seqs, dev_out
        host = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in dev_out)
        for h, t in zip(host, dev_out):
            h.copy_(t, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        return ev, seqs, host

    def _finish(self, item, params, prompts, results) -> None:
        ev, seqs, (toks, lps, ngen) = item
        if ev is not None:
            ev.synchronize()
        stop = set(params.stop_token_ids)
        toks, lps, ngen = toks.tolist(), lps.tolist(), ngen.tolist()
        for i, s in enumerate(seqs):
            ids = toks[i][: ngen[i]]
            reason = "stop" if ids and ids[-1] in stop else "length"
            text = (
                self.tokenizer.decode(ids, skip_special_tokens=True)
                if self.tokenizer is not None
                else ""
            )
            results[s.index] = Completion(
                prompt_index=s.prompt_index,
                token_ids=ids,
                logprobs=lps[i][: ngen[i]],
                text=text,
                finish_reason=reason,
            )
