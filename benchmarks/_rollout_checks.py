"""bf16 correctness checks of FastEngine against Hugging Face on the same weights, printed by benchmarks/rollout.py
before its timings (they run on the model's device, a GPU there):

- logits: relative L2 error vs an fp32 copy of the model, of HF's bf16 forward and of the engine's bf16 prefill +
  teacher-forced decode through its own paged KV cache, on one 200-token sequence;
- greedy decoding: rows identical to HFEngine's, the first divergence per row, and HF's top-2 logit margin there
  (a small margin: the two paths parted at a near-tie);
- sampled logprobs: the engine's per-token logprobs vs a training forward over prompt + completion (T=1);
- live weights: after an in-place weight change, how many of the engine's greedy rows equal HF's on the changed
  model (the engine reads the live parameters, no copy) and how many changed;
- preemption: greedy and seeded-sampled rows with a KV cache that holds a third of the work (sequences
  preempted and recomputed) against a cache that holds all of it. Exact in fp32 (the CPU tests); in bf16 the
  recomputed K/V come from prefill GEMMs of other shapes than the decode steps', so a row can part at a
  near-tie: the check prints how many rows are identical and where the others part.
"""

from __future__ import annotations

import torch

from aha.rollout import HFEngine, SamplingParams
from aha.rollout.fast import FastEngine


def logits_error(model):
    """Relative logits error vs an fp32 copy of the model: HF's bf16 forward and the engine's bf16 prefill +
    teacher-forced decode path (its own paged cache), on one 200-token sequence."""
    import copy

    from aha.rollout.fast.kv_cache import KVCache
    from aha.rollout.fast.model_runner import ModelRunner

    seq = torch.randint(
        0, model.config.vocab_size, (200,), generator=torch.Generator().manual_seed(5)
    ).tolist()
    ref32 = copy.deepcopy(model).float()
    t = lambda x, dt=torch.long: torch.tensor(x, device=model.device, dtype=dt)  # noqa: E731
    with torch.no_grad():
        ref = ref32(t([seq])).logits[0].float()
        hf = model(t([seq])).logits[0].float()
        r = ModelRunner(model)
        r.ensure_rope(256)
        cache = KVCache(r.num_layers, 20, 16, r.num_kv_heads, r.head_dim, r.dtype, r.device)
        pages = list(range(19, 0, -1))
        slot = [pages[p // 16] * 16 + p % 16 for p in range(200)]
        out = [
            r.prefill(
                t(seq[:100]), t(list(range(100))), t(slot[:100]), [100], cache, all_logits=True
            )
        ]
        for p in range(100, 200):
            out.append(
                r.decode(
                    t([seq[p]]),
                    t([p]),
                    t([slot[p]]),
                    t([p + 1], torch.int32),
                    t([pages], torch.int32),
                    cache,
                )
            )
        fast = torch.cat(out).float()
    del ref32
    rel = lambda a: ((a - ref).norm() / ref.norm()).item()  # noqa: E731
    print(
        f"check logits vs fp32 model (rel. L2 error, max abs): HF bf16 {rel(hf):.2e} {(hf - ref).abs().max():.3f}; "
        f"engine bf16 prefill+decode {rel(fast):.2e} {(fast - ref).abs().max():.3f}; "
        f"engine vs HF bf16 {((fast - hf).norm() / hf.norm()).item():.2e}"
    )


def checks(model, tok_count=32):
    """bf16 correctness against HF on the same weights."""
    logits_error(model)
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    prompts = [
        torch.randint(0, V, (int(n),), generator=g).tolist()
        for n in (5, 37, 128, 200, 64, 9, 90, 150)
    ]
    eng = FastEngine(model)
    greedy = SamplingParams(temperature=0, max_tokens=tok_count)
    ref, got = HFEngine(model).generate(prompts, greedy), eng.generate(prompts, greedy)
    first_div = [
        next((i for i, (a, b) in enumerate(zip(r.token_ids, c.token_ids)) if a != b), tok_count)
        for r, c in zip(ref, got)
    ]
    margins = []
    for p, r, d in zip(prompts, ref, first_div):
        if d < tok_count:  # HF's own top-2 logit margin where the two paths part
            with torch.no_grad():
                lg = (
                    model(torch.tensor([p + r.token_ids[:d]], device=model.device))
                    .logits[0, -1]
                    .float()
                )
            top = lg.topk(2).values
            margins.append(round((top[0] - top[1]).item(), 3))
    print(
        f"check greedy vs HF (bf16, {tok_count} tokens x 8 prompts): identical rows "
        f"{sum(d == tok_count for d in first_div)}/8, first divergence {first_div}, "
        f"HF top-2 logit margin there {margins}"
    )
    sp = SamplingParams(n=2, temperature=1.0, max_tokens=64, seed=0)
    out = eng.generate(prompts, sp)
    diffs = []
    for c in out:
        seq = prompts[c.prompt_index] + c.token_ids
        with torch.no_grad():
            logits = (
                model(torch.tensor([seq], device=model.device))
                .logits[0, -len(c.token_ids) - 1 : -1]
                .float()
            )
        ref_lp = torch.log_softmax(logits, -1).gather(
            1, torch.tensor(c.token_ids, device=model.device)[:, None]
        )
        diffs.append((torch.tensor(c.logprobs, device=model.device) - ref_lp.squeeze(1)).abs())
    d = torch.cat(diffs)
    print(
        f"check logprobs vs training forward (bf16, T=1): max |diff| {d.max():.4f}, mean {d.mean():.5f}"
    )
    with torch.no_grad():
        w = model.model.layers[len(model.model.layers) // 2].mlp.down_proj.weight
        w.mul_(4.0)
        changed = eng.generate(prompts, greedy)
        ref2 = HFEngine(model).generate(prompts, greedy)
        w.div_(4.0)
    same_new = sum(a.token_ids == b.token_ids for a, b in zip(changed, ref2))
    diff_old = sum(a.token_ids != b.token_ids for a, b in zip(changed, got))
    print(
        f"check in-place weight change: rows equal to HF after change {same_new}/8, rows changed {diff_old}/8"
    )
    eng.release()
    preemption_check(model, prompts)


def preemption_check(model, prompts, new=256):
    """Rows identical between a preempting (small) and a large KV cache, greedy and seeded sampling."""
    from aha.rollout.fast.kv_cache import kv_bytes_per_token

    total = sum(len(p) + new for p in prompts) * 2
    small = int(total * kv_bytes_per_token(model) / 3)
    for sp in (
        SamplingParams(n=2, temperature=0, max_tokens=new),
        SamplingParams(n=2, temperature=1.0, max_tokens=new, seed=3),
    ):
        big_eng, small_eng = FastEngine(model), FastEngine(model, kv_cache_bytes=small)
        ref, got = big_eng.generate(prompts, sp), small_eng.generate(prompts, sp)
        part = [
            next((i for i, (a, b) in enumerate(zip(r.token_ids, c.token_ids)) if a != b), None)
            for r, c in zip(ref, got)
        ]
        print(
            f"check preemption (bf16, T={sp.temperature}, {len(ref)} rows x {new}, cache 1/3 of the work): "
            f"{small_eng.stats['preemptions']} preemptions, identical rows "
            f"{sum(p is None for p in part)}/{len(ref)}, others part at token {[p for p in part if p is not None]}"
        )
        big_eng.release()
        small_eng.release()
