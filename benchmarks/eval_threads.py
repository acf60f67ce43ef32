"""CPU threads for evaluation: `aha eval` of tiny-base with torch's intra-op pool at 1 vs 2 threads (model.threads /
--threads), on an idle machine and beside busy processes (each a pure-Python spin loop on one core).

    python benchmarks/eval_threads.py [--limit 60] [--k 4] [--busy 0 2] [--repeats 2]

Prints one row per (busy processes, threads): the median wall time of the evaluation (generation and scoring;
the model load excluded) and the generated tokens per second. Issue 20 saw 1 thread generate 2.4x faster
than 2 on a loaded 2-core machine: small matrices gain little from a second thread, and a thread that waits
for a core another process holds stalls the other one at every operator's barrier.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time


def spin() -> None:
    while True:
        pass


def one_run(threads: int, limit: int, k: int) -> tuple[float, int]:
    import torch

    from aha.eval import evaluate_task
    from aha.rollout.factory import make_engine
    from aha.schema import HeldOutConfig, ModelConfig, TaskConfig

    model_cfg = ModelConfig(path="tiny-base", device="cpu", threads=threads)
    model, tok = model_cfg.load(seed=0)
    model.eval()
    assert torch.get_num_threads() == threads
    engine = make_engine("hf", model, tok)
    ev = HeldOutConfig(k=k, limit=limit, n_boot=0)
    ev.sampling.max_new_tokens = 96
    t0 = time.perf_counter()
    res = evaluate_task(engine, tok, TaskConfig(name="chain"), ev, seed=0)
    seconds = time.perf_counter() - t0
    return seconds, sum(s["n_tokens"] for s in res.samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"tiny-base, task chain: {args.limit} problems x k={args.k}, 96 new tokens, HF engine")
    print("| busy processes | threads | seconds (median) | tokens/s |")
    print("|---|---|---|---|")
    for busy in args.busy:
        spinners = [mp.Process(target=spin, daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        try:
            for threads in (1, 2):
                runs = []
                for _ in range(args.repeats):
                    # a fresh process per run: torch's pool size is fixed once it has started
                    with mp.get_context("spawn").Pool(1) as pool:
                        runs.append(pool.apply(one_run, (threads, args.limit, args.k)))
                sec = statistics.median(r[0] for r in runs)
                print(f"| {busy} | {threads} | {sec:.1f} | {runs[0][1] / sec:.0f} |", flush=True)
        finally:
            for p in spinners:
                p.terminate()
                p.join()


if __name__ == "__main__":
    main()
