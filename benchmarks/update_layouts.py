"""The GRPO update alone, on one step's batch, under several memory layouts: the micro-batch token budget x how
many decoder layers are checkpointed. It shows what the memory plan trades (aha.train.memory_plan): a smaller
micro-batch or checkpointing saves memory; each costs time, and below a few thousand tokens per micro-batch the
update waits on the host (each compiled layer call costs ~1-2 ms of CPU), which --profile makes visible as
"kernel s" (the GPU's kernel time, torch.profiler) well under the wall time.

    python benchmarks/update_layouts.py --model 1.5b --new 4096 --max-memory-gib 40 --set model.compile=true \\
        --variants 40417:all,16384:all,4608:all,4608:4,4608:none --profile
    python benchmarks/update_layouts.py --tiny          # CPU smoke test (tests/test_update_layouts_bench.py)

One trainer (benchmarks/_qwen.py's random-weight Qwen2.5 architecture, its memory keys set by the plan) runs one
full step with forced lengths (no stop ids: every completion has NEW tokens); its update
batch is then updated again under each variant TOKENS:LAYERS (LAYERS = all, none or a count of checkpointed
layers, the first ones; TOKENS 0 = no budget), --reps times, the best time kept (the first call of a new shape
compiles). The first row is the run's own layout (the memory plan's, or the config's), the peer the others are
measured against, in the same process. Columns: micro-batches,
update s, the optimizer's share, update MFU (6 x params x tokens / s / 800 TFLOP/s), peak GiB (torch's max
allocated during the variant, the KV cache released), and with --profile the kernel seconds of one more update.
A variant that runs out of memory is a row that says so.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import types
from pathlib import Path

import torch

from _qwen import (
    ARCHS,
    build,
    n_params,
)  # a sibling module: the scripts run as python benchmarks/X.py
from scale import PEAK_FLOPS, force_lengths, overrides


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def kernel_seconds(fn) -> float:
    """GPU kernel time of one call of fn (torch.profiler; 0 on the CPU)."""
    if not torch.cuda.is_available():
        fn()
        return 0.0
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        _sync()
    cuda = torch.autograd.DeviceType.CUDA
    return sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == cuda) / 1e6


def parse_variants(text: str, layers: int) -> list[tuple[int, int]]:
    out = []
    for v in text.split(","):
        tokens, _, k = v.partition(":")
        n = {"all": layers, "none": 0}.get(k, None)
        if (
            not tokens.isdigit()
            or (n is None and not k.isdigit())
            or (n is None and int(k) > layers)
        ):
            raise SystemExit(
                f"--variants: '{v}' is not TOKENS:LAYERS (LAYERS = all, none or 0-{layers})"
            )
        out.append((int(tokens), n if n is not None else int(k)))
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="1.5b", help="one of " + ",".join(ARCHS))
    p.add_argument("--new", type=int, default=4096, help="new tokens per sequence")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--micro", type=int, default=16, help="batch.micro_batch_size")
    p.add_argument("--prompt-tokens", type=int, default=512, help="memory.prompt_tokens")
    p.add_argument("--max-memory-gib", type=float, default=None, help="memory.max_memory_gib")
    p.add_argument("--variants", default="16384:all,4096:all,4096:none", help="TOKENS:LAYERS,...")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument(
        "--profile", action="store_true", help="also the GPU kernel time of one more update"
    )
    p.add_argument("--set", nargs="*", default=[], help="more aha config overrides, key=value")
    p.add_argument("--work", default=None, help="keep the built model here (reused by later calls)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny model, 8 new tokens")
    a = p.parse_args(argv)
    if a.tiny:
        a.model, a.new, a.prompts, a.group, a.micro, a.reps = "tiny", 8, 2, 2, 4, 1
        a.variants = "64:all,16:1,16:none"
    if a.model not in ARCHS:
        p.error(f"--model {a.model}: one of {', '.join(ARCHS)}")
    # scale.overrides reads these names
    args = types.SimpleNamespace(
        group=a.group, prompts=a.prompts, micro=a.micro, optim="adamw", lora=0, beta=0.0,
        prompt_tokens=a.prompt_tokens, max_memory_gib=a.max_memory_gib,
        set=list(a.set),
    )  # fmt: skip
    from aha.config import load_config
    from aha.models.load import enable_checkpointing, unwrap
    from aha.train.config import TrainConfig
    from aha.train.grpo import GRPOTrainer

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="aha-layouts-"))
    model_dir = build(a.model, work / a.model)
    cfg = load_config(TrainConfig, None, overrides(model_dir, a.new, args, work / "run"))
    tr = GRPOTrainer(cfg)
    update, seen = tr.update, []
    force_lengths(tr.engine)
    tr.update = lambda batch: seen.append(batch) or update(batch)
    rows = []
    try:
        tr.train_step(1)
        batch = seen[0]
        tokens = int(batch.attention_mask.sum())
        base = unwrap(tr.model)
        layers = base.get_decoder().layers
        planned = (
            cfg.batch.micro_batch_tokens or 0,
            len(layers) * bool(cfg.model.gradient_checkpointing),
        )
        if not cfg.model.gradient_checkpointing:
            enable_checkpointing(base)  # so that each layer can switch it
        variants = [planned, *parse_variants(a.variants, len(layers))]
        for i, (budget, k) in enumerate(variants):
            for j, layer in enumerate(layers):
                layer.gradient_checkpointing = j < k
            # the decoder's own flag too: the shared-prompt forward (aha.train.forward.can_share) reads it
            base.get_decoder().gradient_checkpointing = k > 0
            cfg.batch.micro_batch_tokens = budget  # read by the update at every call
            row = {"tokens": budget, "ckpt_layers": k, "plan": "yes" if i == 0 else ""}
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            try:
                times = []
                for _ in range(a.reps):
                    _sync()
                    t0 = time.perf_counter()
                    out = update(batch)
                    _sync()
                    times.append(time.perf_counter() - t0)
                best = min(times)
                row.update(
                    micro_batches=out["micro_batches"],
                    update_s=best,
                    optimizer_s=out["time/optimizer"],
                    mfu=6 * n_params(a.model) * tokens / best / PEAK_FLOPS,
                    peak_gib=torch.cuda.max_memory_allocated() / 2**30
                    if torch.cuda.is_available()
                    else float("nan"),
                )
                if a.profile:
                    row["kernel_s"] = kernel_seconds(lambda: update(batch))
            except torch.OutOfMemoryError:
                row["update_s"] = "OOM"
                tr.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            rows.append(row)
    finally:
        tr.close()
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"\nGRPO update alone, Qwen2.5-{a.model} architecture (random weights), {dev}, torch {torch.__version__}; "
        f"one batch of {a.prompts} x {a.group} sequences, {tokens:,} tokens, {a.new} new each; best of {a.reps}"
        + (f"; {' '.join(a.set)}" if a.set else "")
    )
    cols = [
        "tokens",
        "ckpt_layers",
        "plan",
        "micro_batches",
        "update_s",
        "optimizer_s",
        "mfu",
        "peak_gib",
    ]
    cols += ["kernel_s"] if a.profile else []
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        cells = (r.get(c, "-") for c in cols)
        print(
            "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells) + " |"
        )
    return rows


if __name__ == "__main__":
    main()
