"""The long-response case of benchmarks/rollout.py (issue 15): S sequences x N forced new tokens (default
64 x 16,384, Qwen2.5-0.5B architecture, random weights, bf16, temperature 1, no stop ids).

FastEngine runs it in full, once with the KV cache it sizes itself (room for every row's whole length, so no
preemption) and once per `--long-kv-gib` budget (a cache that holds only part of the rows' total length, so
sequences are preempted and recomputed): tok/s, ms/step, peak GiB (torch.cuda.max_memory_allocated), cache and
peak KV in use, preemptions and recomputed prefill tokens. A short warm-up call (64 tokens) captures the
graphs first. HF generate is estimated as the short table does (rollout.hf_times / hf_estimate: a 1-token
run plus timed decode steps right after the prompt and after a prompt padded to the run's final length,
interpolated linearly), since 16k HF steps take tens of minutes; short runs flatter HF (see rollout.py).
"""

from __future__ import annotations

import time

import torch

from aha.rollout import SamplingParams
from aha.rollout.fast import FastEngine


def _timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


def long_rows(model, seqs, new, prompt_len, budgets_gib, hf_steps, hf_times, hf_estimate):
    """Rows of the long-response table: one per KV budget (None: the engine's own sizing), then HF
    (hf_times / hf_estimate: rollout.py's functions)."""

    V = model.config.vocab_size
    prompts = torch.randint(0, V, (seqs, prompt_len), generator=torch.Generator().manual_seed(7))
    sp = SamplingParams(temperature=1.0, max_tokens=new, seed=0)
    rows, fast_tps = [], None
    for gib in budgets_gib:
        eng = FastEngine(
            model, max_num_seqs=seqs, kv_cache_bytes=None if gib is None else int(gib * 2**30)
        )
        eng.generate(prompts.tolist(), SamplingParams(temperature=1.0, max_tokens=64, seed=0))
        torch.cuda.reset_peak_memory_stats()
        out, t = _timed(lambda eng=eng: eng.generate(prompts.tolist(), sp))
        st = eng.stats
        ntok = sum(len(c.token_ids) for c in out)
        assert ntok == seqs * new, "forced lengths: every sequence runs to max_tokens"
        fast_tps = fast_tps or ntok / t
        rows.append(
            dict(
                engine="FastEngine",
                kv=f"{st['kv_cache_mib'] / 1024:.1f}" + (" (auto)" if gib is None else ""),
                tok_s=ntok / t,
                secs=t,
                ms_step=t / max(1, st["decode_steps"]) * 1e3,
                peak=torch.cuda.max_memory_allocated() / 2**30,
                kv_used=st["peak_kv_mib"] / 1024,
                preempt=st["preemptions"],
                recompute=st["prefill_tokens"] - seqs * prompt_len,
            )
        )
        print(
            f"[long {seqs}x{new} kv {rows[-1]['kv']} GiB] {t:.1f} s, {ntok / t:,.0f} tok/s, "
            f"{st['preemptions']} preemptions",
            flush=True,
        )
        eng.release()
        del eng, out
    torch.cuda.empty_cache()
    ids = prompts.to(model.device)
    t1, early, late = hf_times(model, ids, hf_steps, new)
    hf_total = hf_estimate(t1, early, late, new, new, hf_steps)
    rows.append(
        dict(
            engine="HF generate (estimated)",
            tok_s=seqs * new / hf_total,
            secs=hf_total,
            ms_step=(hf_total - t1) / (new - 1) * 1e3,
        )
    )
    return rows, fast_tps / rows[-1]["tok_s"]


def print_long(rows, speedup, seqs, new, prompt_len, hf_steps):
    hdr = (
        "engine",
        "KV cache GiB",
        "tok/s",
        "s",
        "ms/step",
        "peak GiB",
        "peak KV GiB",
        "preemptions",
    )
    print(f"\nlong responses: Qwen2.5-0.5B, {seqs} seqs x {prompt_len}+{new} forced tokens")
    print("| " + " | ".join(hdr) + " | recomputed tokens |\n|" + "---|" * (len(hdr) + 1))
    for r in rows:
        if "kv" in r:
            print(
                f"| {r['engine']} | {r['kv']} | {r['tok_s']:,.0f} | {r['secs']:.1f} | "
                f"{r['ms_step']:.2f} | {r['peak']:.1f} | {r['kv_used']:.1f} | {r['preempt']} | "
                f"{r['recompute']:,} |"
            )
        else:
            print(
                f"| {r['engine']} | - | {r['tok_s']:,.0f} | {r['secs']:.0f} | {r['ms_step']:.1f} "
                f"| - | - | - | - |"
            )
    print(
        f"FastEngine (own cache sizing) vs HF generate: {speedup:.1f}x (HF estimated from a 1-token run and "
        f"{hf_steps} timed steps at each end of the context range; a lower bound, see above)"
    )
