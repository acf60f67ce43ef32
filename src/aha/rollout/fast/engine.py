"""FastEngine: continuous-batching generation over the model's live parameters (the Engine protocol).

    engine = FastEngine(model, tokenizer)
    completions = engine.generate(prompt_token_ids, SamplingParams(n=8, temperature=1.0, max_tokens=512))
    engine.release()            # give the KV cache and CUDA graphs back before the training phase

Loop: admit (prefill each prompt once, sample its n first tokens, share its KV pages; resume preempted
sequences first) -> give every running sequence the KV pages its next round needs, preempting the latest ones
by recompute when the cache is short (scheduler.py) -> run `sync_every` decode steps without looking at the
device -> queue a copy of every row's new tokens, logprobs and `active` flag (batch.snapshot) -> read the copy
queued one round earlier (so the GPU always has a round of work queued) -> push those tokens to each
completion's Tracker (stop ids, stop strings, on_tokens, abort: see aha.rollout.stops) -> free the rows and
pages of finished completions (rows that end by length are known on the host exactly and freed at once;
others are seen within two rounds) -> compact rows so the batch bucket shrinks -> admit again. A completion
cut on the host (stop string, abort) or preempted has its row switched off.

KV memory: `kv_cache_bytes` (or `kv_cache_fraction` of the free GPU memory) is the cache, capped at what every
row could use; pages are taken as tokens are written, so long and short completions share it, and a cache
smaller than all rows' max length costs recompute (stats["preemptions"]), not an error. Only one sequence
that cannot fit the whole cache is an error. `kv_bytes_per_token(model)` (kv_cache.py) prices a token.
kv_cache_dtype="fp8" (GPUs of compute capability 8.9+, or the CPU) stores K/V in float8 e4m3 with a scale per
token and head: about half the bytes, so twice the tokens in the same memory (decode steps no faster than bf16
with this attention kernel), at a small change in the sampled distribution (kv_cache.py).
weights_dtype="fp8" (same GPUs, or the CPU) decodes on float8 e4m3 copies of q/k/v, gate/up and down,
quantized from the live weights at every call (fp8_linear.py, model_runner.py): faster decode GEMMs, a policy
visibly further from the trainer's (pair it with algorithm.rollout_is). It takes the packed copy's place.
stats: decode_steps, prefill_tokens (recompute included), seconds, tokens_per_s, preemptions, peak_pages /
peak_kv_mib (most pages in use at once), kv_cache_mib, packed_mib, mode.

Packed weights (pack_weights; default: on a GPU when the copy takes at most a quarter of the free memory):
q/k/v and gate/up run as one GEMM each on a copy of their weights refreshed at the start of every call
(model_runner.py); like the KV cache it is kept (same address, so the CUDA graphs stay valid) until release():
about half a Qwen2.5 model's bytes. Training runs with a memory plan are told by the plan.

Streaming: `on_tokens(i, new_ids)` is called once per sync round for each completion that produced tokens.
Sampling noise is keyed by (seed, completion index, token index) (noise.py): with the same seed and inputs the
samples repeat on one device whatever the batch size, cache size, preemptions or aborted neighbours, as far as
the logits do (exactly in fp32 on the CPU; in bf16 on a GPU, GEMMs of other shapes - a recomputed prefill,
another batch size - can move a logit by a rounding step and part a row at a near-tie: see
benchmarks/_rollout_checks.py). They differ from HF's (different random streams). Same outputs as HFEngine otherwise (prompt-major, logprob of the sampled
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

from ...config import ConfigError
from ..base import Completion, OnTokens, SamplingParams
from ..hf import HFEngine
from ..stops import Tracker, completions
from .batch import Batch, bucket_for, to_dev
from .kv_cache import KVCache, PageAllocator, kv_storage
from .model_runner import FP8Unsupported, ModelRunner, UnsupportedModel
from .prefill import Prefill
from .scheduler import Scheduler, cdiv

WEIGHT_DTYPES = ("auto", "fp8")
# pack_weights=None packs when the copy takes at most this share of the free GPU memory
AUTO_PACK_SHARE = 0.25


def auto_pack(device_type: str, packed_bytes: int, free_bytes: int) -> bool:
    """The default packing choice: on a GPU, when the packed copy is small next to the free memory."""
    return device_type == "cuda" and packed_bytes <= AUTO_PACK_SHARE * free_bytes


def free_gpu_bytes(dev: torch.device) -> int:
    """GPU memory this process could take now: the driver's free bytes plus torch's cached, unused ones."""
    free, _ = torch.cuda.mem_get_info(dev)
    return free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)


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
        pack_weights: bool | None = None,
        kv_cache_dtype: str = "auto",
        weights_dtype: str = "auto",
    ):
        if not 0 < kv_cache_fraction <= 1:
            raise ValueError(f"kv_cache_fraction must be in (0, 1], got {kv_cache_fraction}")
        if pack_weights not in (None, True, False):
            raise ValueError(
                f"pack_weights must be True, False or None (auto), got {pack_weights!r}"
            )
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
        self.pack_weights = pack_weights
        kv_storage(kv_cache_dtype, torch.float32)  # checks the name
        if weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(
                f"weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {weights_dtype!r}"
            )
        self.kv_cache_dtype, self.weights_dtype = kv_cache_dtype, weights_dtype
        self._auto_pack: bool | None = None  # pack_weights=None: decided at the first call
        self.cache = self.batch = None
        self._key = None
        self.stats: dict = {}
        try:
            self.runner, self.fallback = ModelRunner(model), None
        except UnsupportedModel as e:
            for key, value in (
                ("kv_cache_dtype", kv_cache_dtype),
                ("weights_dtype", weights_dtype),
            ):
                if value != "auto":  # HF generate has no fp8: not a silent bf16 run
                    raise ConfigError(
                        key,
                        f"{value} needs FastEngine, which does not run this model ({e}): set {key}=auto",
                    ) from None
            warnings.warn(
                f"FastEngine: unsupported model ({e}); falling back to HFEngine (HF generate)",
                stacklevel=2,
            )
            self.runner, self.fallback = None, HFEngine(model, tokenizer)
        if self.runner is not None:
            self.runner.weights_dtype = weights_dtype
            self._check_fp8(self.runner.device)
            if weights_dtype == "fp8":
                try:
                    self.runner.pack_bytes()  # every projection plain, or one line now
                except FP8Unsupported as e:
                    raise ConfigError("weights_dtype", f"{e}; set weights_dtype=auto") from None

    def release(self) -> None:
        """Free the KV cache, packed weights, batch buffers and CUDA graphs (the next generate allocates them
        again). The memory stays in torch's cache, so the training update that follows (engine_release) reuses it
        without new cudaMalloc calls (0.5B GRPO step on an H200: 1.70 -> 1.61 s); torch.cuda.empty_cache() hands
        it back to the device for other processes."""
        self.cache = self.batch = None
        self._key = None
        if self.runner is not None:
            self.runner.unpack()

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
        if self.weights_dtype == "fp8" or self._pack_choice(dev):
            self._packed_bytes = r.pack()  # before the KV budget: it takes memory
        else:
            r.unpack()
            self._packed_bytes = 0
        longest = max(len(p) for p in prompts)
        r.ensure_rope(longest + params.max_tokens)
        store = kv_storage(self.kv_cache_dtype, r.dtype)
        self._check_fp8(dev)  # the model may have moved since __init__
        bpp = KVCache.bytes_per_page(r.num_layers, S, r.num_kv_heads, r.head_dim, store)
        need = 1 + rows * cdiv(longest + params.max_tokens - 1, S)
        if self.kv_cache_bytes is not None:
            budget = self.kv_cache_bytes
        elif dev.type == "cuda":
            budget = self.kv_cache_fraction * (
                free_gpu_bytes(dev) + (self.cache.nbytes if self.cache is not None else 0)
            )
        else:
            budget = 1 << 30
        pages = max(2, min(need, int(budget // bpp)))
        c = self.cache
        if (
            c is None
            or c.k.dtype != store
            or c.k.device != dev
            or (c.num_pages < pages and c.num_pages < need)
        ):
            self.cache = self.batch = None
            if c is not None and dev.type == "cuda":
                # a cache replaced (larger, or another dtype or device): hand the old one back whole, so the new one
                # need not fit around it (after release() there is none, and emptying torch's cache would only
                # make the update allocate again); c too is dropped: a live reference would keep it
                c = None
                torch.cuda.empty_cache()
            self.cache = KVCache(r.num_layers, pages, S, r.num_kv_heads, r.head_dim, store, dev)
        width = cdiv(longest + params.max_tokens, S)
        b = self.batch
        stale = b is None or b.cache is not self.cache or b.ring != self.sync_every + 1
        if stale or b.width < width or b.rows < rows:
            self.batch = Batch(
                r, self.cache, max(rows, self.max_num_seqs), self.sync_every + 1, _pow2(width)
            )
        key = self._graph_key()
        if key != self._key:
            self.batch.drop_graphs()
            self._key = key
        return bpp, width

    def _check_fp8(self, dev: torch.device) -> None:
        """The Triton kernels convert to float8 e4m3 only on GPUs of compute capability 8.9+."""
        if dev.type != "cuda" or torch.cuda.get_device_capability(dev) >= (8, 9):
            return
        for key in ("kv_cache_dtype", "weights_dtype"):
            if getattr(self, key) == "fp8":
                raise ConfigError(
                    key,
                    "fp8 needs a GPU with float8 support (compute capability 8.9+: Ada, Hopper or newer; "
                    f"this one is {torch.cuda.get_device_name(dev)}): set {key}=auto",
                )

    def _pack_choice(self, dev: torch.device) -> bool:
        """pack_weights, or by default (None): on a GPU, when the copy takes at most AUTO_PACK_SHARE of the
        memory free at the first call (so a large model on a small GPU keeps its memory for the KV cache);
        decided once, so the CUDA graphs are not re-captured by a change of mind."""
        if self.pack_weights is not None:
            return self.pack_weights
        if self._auto_pack is None:
            free = free_gpu_bytes(dev) if dev.type == "cuda" else 0
            self._auto_pack = auto_pack(dev.type, self.runner.pack_bytes(), free)
        return self._auto_pack

    # ------------------------------------------------------------------ the loop
    def _generate(self, prompts, params: SamplingParams, on_tokens) -> list[Completion]:
        t0 = time.perf_counter()
        rows = min(self.max_num_seqs, len(prompts) * params.n)
        bpp, width = self._setup(prompts, params, rows)
        cuda = self.runner.device.type == "cuda"
        M = params.max_tokens
        sched = Scheduler(
            prompts, params.n, M, self.page_size, rows, PageAllocator(self.cache.num_pages)
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

        prefill = Prefill(self.runner, self.cache, batch, self.max_prefill_tokens)

        def tokens_of(s):  # a preempted sequence's token count once all are on the host
            t = trackers[s.index]
            return None if t.done else len(t.ids)

        inflight: deque = deque()  # (number, snapshot) queued on the device, oldest first
        queued = steps = prefill_tokens = 0
        while True:
            units = sched.admit(self.sync_every)
            if units:
                prefill_tokens += prefill(units, prompts, params, trackers)
            if sched.live:
                self._maybe_compact(sched)
                n = min(self.sync_every, max(M - s.gen for s in sched.live.values()))
                entries, preempted = sched.grow(n, queued + 1)
                if preempted:  # their last tokens: in a snapshot queued before their rows go off
                    queued += 1
                    inflight.append((queued, self._snapshot({**sched.live, **preempted}, cuda)))
                    batch.deactivate(self._to_dev(list(preempted)))
                if entries:
                    batch.set_pages(*(self._to_dev(list(c)) for c in zip(*entries)))
                b = bucket_for(max(sched.live) + 1, batch.rows)
                for _ in range(n):
                    batch.step(b)
                steps += n
                for s in sched.live.values():
                    s.gen = min(s.gen + n, M)
                queued += 1
                inflight.append((queued, self._snapshot(dict(sched.live), cuda)))
                for s in [s for s in sched.live.values() if s.gen >= M]:
                    sched.finish(s)  # by length: its last tokens come with the snapshot just queued
            elif not inflight:
                if sched.busy:
                    raise RuntimeError("FastEngine: admission stalled with free cache (a bug)")
                break
            while inflight and (len(inflight) > 1 or not sched.live):
                no, snap = inflight.popleft()
                self._read(snap, sched, trackers)
                sched.ready(no, tokens_of)
        results = completions(trackers, [i // params.n for i in range(len(trackers))])
        secs = time.perf_counter() - t0
        self.stats = dict(
            decode_steps=steps,
            prefill_tokens=prefill_tokens,
            seconds=secs,
            tokens_per_s=sum(len(c.token_ids) for c in results) / max(secs, 1e-9),
            preemptions=sched.preemptions,
            peak_pages=sched.peak_pages,
            peak_kv_mib=sched.peak_pages * bpp / 2**20,
            kv_cache_pages=self.cache.num_pages - 1,
            kv_cache_mib=self.cache.nbytes / 2**20,
            packed_mib=self._packed_bytes / 2**20,
            mode=batch.mode,
        )
        return results

    def _to_dev(self, x, dtype=torch.long):
        return to_dev(x, self.runner.device, dtype)

    def _maybe_compact(self, sched) -> None:
        live = sorted(sched.live)
        hi = live[-1] + 1
        if bucket_for(hi, self.batch.rows) <= bucket_for(len(live), self.batch.rows):
            return
        self.batch.compact(self._to_dev(live), hi)
        sched.relabel(live)

    def _snapshot(self, mapping: dict, cuda: bool):
        """Queue the copy of the new tokens of rows [0, max row] to the host; the rows of `mapping` (row ->
        seq) are delivered when it is read. Returns (event, packed, logprobs, mapping)."""
        packed, lps = self.batch.snapshot(bucket_for(max(mapping) + 1, self.batch.rows))
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
                cut.append(s.row)  # by a stop id (row already off), a stop string or an abort
                sched.finish(s)
        if cut:
            self.batch.deactivate(self._to_dev(cut))
