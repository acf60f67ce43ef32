"""The memory plan's choice: among the settings a config leaves null, the first layout whose estimate
(aha.train.memory) fits under HEADROOM of the limit (the rest is for allocator fragmentation, CUDA graphs,
library workspaces and the estimate's own error).

Order, fastest first: (checkpointing, engine_release) = (off, off), (off, on), (on, off), (on, on) with a
micro-batch of at least its efficient size (_efficient: by the layer's weights and checkpointing, at most
EFFICIENT_TOKENS; or the whole micro-batch when that is smaller) and a KV cache for every
sequence of the step; then, with micro-batches of at least one sequence, the layout with the fewest host-side
layer calls (below the efficient size the update waits on the host: micro-batches x 1.5 under checkpointing); then a
smaller KV cache (fewer sequences in flight, at least one). Checkpointing costs a second forward in the update;
releasing the KV cache costs a new allocation and a CUDA-graph capture per batch size used, every step (the
capture 0.05 s under cProfile at 1.5B x 4,096, s14), so releasing comes first (H200, 1.5B x 4,096: released
17.97 s vs kept 18.65, both checkpointed, s10; released without checkpointing 15.94 s vs with 16.30, s14); a
smaller KV cache makes generation, most of a step, run in waves.
The token budget is the whole micro-batch (micro_batch_size x (prompt_tokens + max_new_tokens)) when that fits,
else the most that fits; prompts longer than memory.prompt_tokens then make more, smaller micro-batches, not a
larger peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .memory import (
    Breakdown,
    ModelShape,
    RunSpec,
    activation_bytes,
    engine_parts,
    packed_bytes,
    static_parts,
)

HEADROOM = 0.9
LAYOUTS = ((False, False), (False, True), (True, False), (True, True))  # (checkpointing, release)
# Below its efficient size an update's time goes with its host-side layer calls: per micro-batch a forward and a
# backward per layer, and under checkpointing a second forward. Measured on an H200 (model.compile=true): 1.5B,
# one-sequence micro-batches, 9.93 s checkpointed vs 6.61 s not (1.5x); 0.5B, the whole update on 16,384-token
# micro-batches 0.81 s vs 1.60 s on 7,498 (both checkpointed).
CKPT_CALLS = 1.5
# A micro-batch is efficient when each layer call's GPU work outlasts the host's cost of making the call (~1-2 ms
# a compiled layer): tokens x the layer's weights >= EFFICIENT_WORK, x CKPT_CALLS under checkpointing. From the
# H200 figures above: 0.5B (14.9M weights a layer) checkpointed needs ~16k tokens; 1.5B (46.8M) without
# checkpointing is busy from one 4,608-token sequence (docs/results/scale_h200/s14). Never more than
# EFFICIENT_TOKENS: past it the micro-batch's size hardly matters on any model.
EFFICIENT_WORK = 16384 * 14.9e6 / CKPT_CALLS
EFFICIENT_TOKENS = 16384


@dataclass
class Plan:
    """The chosen settings, the KV-cache bytes left for the engine, and the estimate of that layout."""

    checkpointing: bool
    micro_batch_tokens: int
    engine_release: bool
    kv_cache_bytes: int
    breakdown: Breakdown
    limit: int
    fits: bool = True
    # When nothing fits: the smallest layout the user's settings allow (for the error message).
    minimum: Breakdown | None = field(default=None, repr=False)


# ---- the plan -----------------------------------------------------------------------------------------------
def _max_tokens(shape, run, room: int, checkpointing: bool, cap: int) -> int:
    """The most tokens per micro-batch whose activations fit in `room` (0 if not even one), at most `cap`."""
    lo, hi = 0, cap
    while lo < hi:  # activation_bytes is increasing in tokens
        mid = (lo + hi + 1) // 2
        if activation_bytes(shape, run, mid, checkpointing) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def make_plan(
    shape: ModelShape,
    run: RunSpec,
    limit: int,
    *,
    checkpointing: bool | None = None,
    micro_batch_tokens: int | None = None,
    engine_release: bool | None = None,
) -> Plan:
    """The first layout (module docstring) that fits in HEADROOM * limit bytes. A keyword that is not None is
    the user's choice and is kept; micro_batch_tokens=0 means "no token budget" (whole micro-batches).
    With run.packed, the engine's packed weights (which live as long as its KV cache) are kept only when they
    cost no slower layout (a packed plan then has breakdown.packed > 0; size_engine tells the engine)."""
    keys = dict(
        checkpointing=checkpointing,
        micro_batch_tokens=micro_batch_tokens,
        engine_release=engine_release,
    )
    plan = _make_plan(shape, run, limit, **keys)
    if run.packed:
        bare = _make_plan(shape, replace(run, packed=False), limit, **keys)
        if not plan.fits or (bare.fits and _rank(bare, shape, run) < _rank(plan, shape, run)):
            return bare  # packing is optional: a run that cannot fit is reported without it
    return plan


def _efficient(shape: ModelShape, run: RunSpec, checkpointing: bool) -> int:
    """A micro-batch's efficient size (EFFICIENT_WORK's), at least one sequence, at most the whole micro-batch."""
    weights = sum(i * o for i, o in shape.linears().values())  # one layer's
    work = EFFICIENT_WORK * (CKPT_CALLS if checkpointing else 1)
    tokens = min(EFFICIENT_TOKENS, math.ceil(work / max(1, weights)))
    return min(run.micro_batch_size * run.seq_tokens, max(tokens, run.seq_tokens))


def _rank(plan: Plan, shape: ModelShape, run: RunSpec) -> tuple:
    """Faster first: a micro-batch of the efficient size, the layout's place in LAYOUTS, a larger KV cache (up to
    every sequence's), a larger micro-batch below the efficient size. Above it the micro-batch's size hardly
    matters and the packed weights do (every decode step: ~0.13 ms of 2.9 at 1.5B on an H200), so a packed plan
    with a smaller but efficient micro-batch beats an unpacked one (1.5B x 4,096, fp8 KV, 40 GiB: 18,524 tokens
    packed, not 24,459 bare)."""
    layout = LAYOUTS.index((plan.checkpointing, plan.engine_release))
    efficient = _efficient(shape, run, plan.checkpointing)
    tokens = min(plan.micro_batch_tokens, efficient)
    # _make_plan's tiers first: an efficient micro-batch in any layout before a host-bound one
    return (tokens < efficient, layout, -plan.breakdown.kv_cache, -tokens)


def _make_plan(
    shape: ModelShape,
    run: RunSpec,
    limit: int,
    *,
    checkpointing: bool | None,
    micro_batch_tokens: int | None,
    engine_release: bool | None,
) -> Plan:
    static = static_parts(shape, run)
    kv_full, kv_one, engine = engine_parts(shape, run)
    # for the KV cache, the packed weights and the activations
    free = int(HEADROOM * limit) - static.static - engine
    packed = packed_bytes(shape, run)
    gen_free = free - packed  # for the KV cache (the packed weights live as long as it does)
    whole = run.micro_batch_size * run.seq_tokens  # the most tokens a micro-batch can hold
    fixed = whole if micro_batch_tokens == 0 else micro_batch_tokens
    act = lambda n, ckpt: activation_bytes(shape, run, min(n, whole), ckpt)
    layouts = [
        (c, r) for c, r in LAYOUTS if checkpointing in (None, c) and engine_release in (None, r)
    ]

    def attempt(ckpt: bool, release: bool, full_kv: bool, floor: int) -> Plan | None:
        # released: the KV cache and packed weights are gone during the update; kept: the update shares
        if full_kv:
            room = free if release else gen_free - kv_full  # for the activations
            if kv_full > gen_free or room < 0:
                return None
            tokens = fixed if fixed is not None else _max_tokens(shape, run, room, ckpt, whole)
            if act(tokens, ckpt) > room or (fixed is None and tokens < floor):
                return None
        else:  # fewer sequences in flight: the KV cache gets what one micro-batch leaves
            tokens = fixed if fixed is not None else floor
            if act(tokens, ckpt) > (free if release else gen_free):
                return None
        kv_bytes = gen_free if release else gen_free - act(tokens, ckpt)
        if not full_kv and kv_bytes < kv_one:
            return None
        bd = replace(
            static,
            kv_cache=min(kv_bytes, kv_full),
            engine=engine,
            packed=packed,
            activations=act(tokens, ckpt),
            release=release,
        )
        return Plan(ckpt, tokens, release, kv_bytes, bd, limit)

    # tiers: every sequence's KV cache and an efficient micro-batch; the cache and one sequence; a smaller cache
    for full_kv, efficient in ((True, True), (True, False), (False, False)):
        floor = lambda c: _efficient(shape, run, c) if efficient else run.seq_tokens
        plans = [p for c, r in layouts if (p := attempt(c, r, full_kv, floor(c))) is not None]
        if plans and full_kv and not efficient:
            # Below its efficient size the update waits on the host, per micro-batch and layer call, so the
            # layout with the fewest layer calls wins (ties: LAYOUTS order); see CKPT_CALLS.
            return max(
                plans, key=lambda p: p.micro_batch_tokens / (CKPT_CALLS if p.checkpointing else 1)
            )
        if plans:
            return plans[0]
    # Nothing fits: report the smallest layout the user's choices allow (checkpointing, release, one sequence).
    ckpt, release = layouts[-1]
    tokens = fixed if fixed is not None else run.seq_tokens
    least = replace(
        static,
        kv_cache=kv_one,
        engine=engine,
        packed=packed,
        activations=act(tokens, ckpt),
        release=release,
    )
    return Plan(ckpt, tokens, release, 0, least, limit, fits=False, minimum=least)
