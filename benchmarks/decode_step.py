"""FastEngine's decode step with packed q/k/v and gate/up weights (one GEMM per group) against the model's separate
projections (three and two GEMMs, the peer it replaces), with an fp8 KV cache (kv_cache_dtype="fp8") and with fp8
decode weights (weights_dtype="fp8": paths fp8w, fp8w+kv) against the packed bf16 one, at one batch size and
context.

    python benchmarks/decode_step.py                      # Qwen2.5-1.5B at 2,176 and 0.5B at 512 tokens, one GPU
    python benchmarks/decode_step.py --cases 1.5b:2048 --rows 64 --paths packed,fp8
    python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv --kernels 12   # + the costliest kernels
    python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv,fp8w+kv-nopdl   # programmatic launch
    python benchmarks/decode_step.py --cases 1.5b:2048 --paths fp8w+kv,fp8w+kv-unfused # o_proj, split sums
    python benchmarks/decode_step.py --tiny               # CPU smoke test (eager steps, no CUDA graphs)

Per case (a Qwen2.5 architecture with random weights, bf16, 128-token random prompts, forced lengths): a full
generate of NEW tokens at ROWS sequences (its ms per step, the best of two calls, and whether the second call
reused the first's CUDA graphs), then one decode step at the final context: the CUDA-graph replay time (median
of 5 x 50 replays), the eager kernel count and time per step (torch.profiler), and the bandwidth bound (weight
+ KV bytes / the measured device-to-device copy rate). Logits of packed and modules are compared on the same
state (the fp8 paths generate other tokens, so only their speed is compared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from _qwen import ARCHS  # noqa: E402  (a sibling module: the scripts run as python benchmarks/X.py)
from aha.rollout import SamplingParams  # noqa: E402
from aha.rollout.fast import FastEngine, kv_bytes_per_token  # noqa: E402
from aha.rollout.fast import model_runner as mr  # noqa: E402


def model_for(arch: str, dev: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**ARCHS[arch], max_position_embeddings=32768, rope_theta=1e6)
    with torch.device(dev):
        model = Qwen2ForCausalLM(cfg)
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    return model.to(dtype).eval()


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def replay_ms(batch, rows: int) -> float:
    batch.drop_graphs()
    batch.capture(rows)
    graph = batch.graphs[(rows, batch.mode)][0]
    graph.replay()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    times = []
    for _ in range(5):
        ev[0].record()
        for _ in range(50):
            graph.replay()
        ev[1].record()
        torch.cuda.synchronize()
        times.append(ev[0].elapsed_time(ev[1]) / 50)
    return sorted(times)[2]


def eager_kernels(batch, rows: int, dev: str) -> tuple[int, float, dict]:
    """(kernels per step, their summed time in ms, {kernel name: (launches, us) per step}) of eager decode
    steps; (0, wall ms, {}) on the CPU."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    saved, batch.pool = batch.pool, None  # the eager path
    try:
        if dev != "cuda":
            t = time.perf_counter()
            for _ in range(5):
                batch.sample_update(rows, batch.forward(rows), batch.mode)
            return 0, (time.perf_counter() - t) / 5 * 1e3, {}
        batch.forward(rows)
        sync(dev)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                batch.sample_update(rows, batch.forward(rows), batch.mode)
            sync(dev)
        ev = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        names: dict = {}  # per name over the 5 steps, then a step's share
        for e in ev:
            n, us = names.get(e.name, (0, 0.0))
            names[e.name] = (n + 1, us + e.time_range.elapsed_us())
        names = {k: (n / 5, us / 5) for k, (n, us) in names.items()}
        return len(ev) // 5, sum(e.time_range.elapsed_us() for e in ev) / 5 / 1e3, names
    finally:
        batch.pool = saved


PATHS = {  # (pack_weights, kv_cache_dtype, weights_dtype)
    "modules": (False, "auto", "auto"),
    "packed": (True, "auto", "auto"),
    "fp8": (True, "fp8", "auto"),
    "fp8w": (True, "auto", "fp8"),
    "fp8w+kv": (True, "fp8", "fp8"),
}
NOPDL = "-nopdl"  # a path's name + NOPDL: the same path with AHA_PDL=0 (kernels without programmatic launch)
# a path's name + UNFUSED (before NOPDL): fp8 weights with model_runner.FUSED_SUMS off (cuBLAS o_proj, split sums
# in a kernel of their own)
UNFUSED = "-unfused"


def _path(name: str) -> tuple:
    """(pack_weights, kv_cache_dtype, weights_dtype, pdl, fused) of a --paths entry."""
    rest = name.removesuffix(NOPDL)
    base = rest.removesuffix(UNFUSED)
    return (*PATHS[base], rest == name, base == rest)


def case(arch: str, new: int, rows: int, dev: str, bw: float, paths: list[str]) -> list[dict]:
    model = model_for(arch, dev)
    prompts = torch.randint(
        0, model.config.vocab_size, (rows, 128), generator=torch.Generator().manual_seed(0)
    )
    sp = SamplingParams(temperature=1.0, max_tokens=new, seed=0)
    ctx = 128 + new
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    out, logits = [], {}
    for path in paths:
        pack, kv_dtype, w_dtype, pdl, fused = _path(path)
        saved_pdl = os.environ.get("AHA_PDL")
        os.environ["AHA_PDL"] = "1" if pdl else "0"
        mr.FUSED_SUMS = fused
        try:
            row = _run_path(model, prompts, sp, arch, path, pack, kv_dtype, w_dtype, rows, dev)
        finally:
            mr.FUSED_SUMS = True
            if saved_pdl is None:
                os.environ.pop("AHA_PDL", None)
            else:
                os.environ["AHA_PDL"] = saved_pdl
        kv = rows * ctx * kv_bytes_per_token(model, kv_cache_dtype=kv_dtype)
        row["bound_ms"] = (wbytes + kv) / bw * 1e3 if bw else float("nan")
        logits[path] = row.pop("logits")
        out.append(row)
    if "modules" in logits and "packed" in logits:
        ref = logits["modules"]
        row = out[paths.index("packed")]
        row["logits_rel_err"] = float((logits["packed"] - ref).norm() / ref.norm())
    return out


def _run_path(model, prompts, sp, arch, path, pack, kv_dtype, w_dtype, rows, dev) -> dict:
    """One path's row (module docstring), with its final logits ("logits") for the caller."""
    eng = FastEngine(
        model,
        max_num_seqs=rows,
        pack_weights=pack,
        kv_cache_dtype=kv_dtype,
        weights_dtype=w_dtype,
    )
    eng.generate(prompts.tolist(), SamplingParams(temperature=1.0, max_tokens=8, seed=0))
    secs, graphs = [], None
    for _ in range(2):
        sync(dev)
        t = time.perf_counter()
        eng.generate(prompts.tolist(), sp)
        sync(dev)
        secs.append(time.perf_counter() - t)
        graphs = graphs if graphs is not None else dict(eng.batch.graphs)
    reused = all(eng.batch.graphs.get(k) is g for k, g in graphs.items())
    steps = eng.stats["decode_steps"]
    with torch.no_grad():
        logits = eng.batch.forward(rows).float()
        replay = replay_ms(eng.batch, rows) if dev == "cuda" else float("nan")
        n, kms, names = eager_kernels(eng.batch, rows, dev)
    row = {
        "model": arch,
        "context": prompts.shape[1] + sp.max_tokens,
        "path": path,
        "ms_per_step": min(secs) / max(1, steps) * 1e3,
        "replay_ms": replay,
        "kernels": n,
        "kernel_ms": kms,
        "packed_mib": eng.stats["packed_mib"],
        "kv_mib": eng.stats["kv_cache_mib"],
        "graphs_reused": reused if dev == "cuda" else "-",
        "by_kernel": names,
        "logits": logits,
    }
    eng.release()
    return row


COLS = [
    "model",
    "context",
    "path",
    "ms_per_step",
    "replay_ms",
    "kernels",
    "kernel_ms",
    "bound_ms",
    "packed_mib",
    "kv_mib",
]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="1.5b:2048,0.5b:384", help="ARCH:NEW_TOKENS, a comma list")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument(
        "--paths",
        default="modules,packed,fp8",
        help=f"a comma list of {', '.join(PATHS)}; PATH{NOPDL}: the same with AHA_PDL=0; "
        f"PATH{UNFUSED}[{NOPDL}]: fp8 weights without the fused split sums and Triton o_proj",
    )
    p.add_argument("--tiny", action="store_true", help="CPU smoke test")
    p.add_argument(
        "--kernels", type=int, default=0, help="also print each path's N costliest kernels a step"
    )
    a = p.parse_args(argv)
    if a.tiny:
        a.cases, a.rows = "tiny:8", 4
    dev = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    if dev == "cuda":
        from rollout import (
            copy_bandwidth,
        )  # the device-to-device copy rate, as benchmarks/rollout.py measures it

        bw = copy_bandwidth()
    else:
        bw = 0.0
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    paths = a.paths.split(",")
    if not paths or any(x.removesuffix(NOPDL).removesuffix(UNFUSED) not in PATHS for x in paths):
        p.error(
            f"--paths takes a comma list of {', '.join(PATHS)} (each may end in {UNFUSED} and/or {NOPDL}); "
            f"got {a.paths!r}"
        )
    rows = []
    cases = []
    for c in a.cases.split(","):
        arch, _, new = c.partition(":")
        if arch not in ARCHS or not new.isdigit():
            p.error(f"--cases takes ARCH:NEW_TOKENS with ARCH one of {', '.join(ARCHS)}; got {c!r}")
        cases.append((arch, int(new)))
    for arch, new in cases:
        rows += case(arch, new, a.rows, dev, bw, paths)
        if dev == "cuda":
            torch.cuda.empty_cache()
    print(
        f"\nDecode step at {a.rows} rows, {name}, torch {torch.__version__}"
        + (f", copy {bw / 1e12:.2f} TB/s" if bw else "")
    )
    print("| " + " | ".join(COLS) + " |\n|" + "---|" * len(COLS))
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in COLS]
        print("| " + " | ".join(cells) + " |")
    for r in rows if a.kernels else ():
        print(f"\n{r['model']} {r['path']}: kernels a step by time (eager, torch.profiler)")
        print("| kernel | launches | us | us each |\n|---|---|---|---|")
        top = sorted(r["by_kernel"].items(), key=lambda kv: -kv[1][1])[: a.kernels]
        for name, (n, us) in top:
            print(f"| {name[:90]} | {n:.0f} | {us:.1f} | {us / max(n, 1e-9):.2f} |")
    by = {(r["model"], r["path"]): r for r in rows}
    for arch, _ in cases:
        if (arch, "modules") in by and (arch, "packed") in by:
            r = by[(arch, "packed")]
            print(
                f"  {arch}: packed/modules replay {r['replay_ms'] / by[(arch, 'modules')]['replay_ms']:.3f}, "
                f"logits rel err {r['logits_rel_err']:.1e}, graphs reused across calls: {r['graphs_reused']}"
            )
        if (arch, "packed") in by and (arch, "fp8") in by:
            r, b = by[(arch, "fp8")], by[(arch, "packed")]
            print(
                f"  {arch}: fp8/packed (bf16 KV) replay {r['replay_ms'] / b['replay_ms']:.3f}, "
                f"ms per step {r['ms_per_step'] / b['ms_per_step']:.3f}, KV MiB {r['kv_mib'] / b['kv_mib']:.3f}"
            )
    return rows


if __name__ == "__main__":
    main()
