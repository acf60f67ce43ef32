"""The training lm head: per-token logprob + entropy, forward and backward, through the fused Triton kernels
(aha.algos.logprobs_fused) against the plain chunked torch version (aha.algos.logprobs), the peer it replaces.

    python benchmarks/lm_head.py                          # Qwen2.5-0.5B and 1.5B head shapes, one GPU
    python benchmarks/lm_head.py --cases 60000x896 --chunks 1024,2048,4096
    python benchmarks/lm_head.py --tiny                   # CPU smoke test (plain path; fused under TRITON_INTERPRET=1)

Per case (tokens x hidden size, the Qwen2.5 vocabulary of 151,936, bf16 on a GPU): the time of one forward +
backward with the entropy term (what the policy update runs), of a no-grad forward of the logprobs alone (the
reference model's and evaluation's), and the peak memory above the inputs; the median of --repeats after a
warm-up, and the plain/fused ratio. Also the one matmul h @ W.T, the floor of the four (forward, recomputed
forward, two gradients) each path runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from aha._triton import HAS_TRITON
from aha.algos.logprobs import token_logprobs_entropy

VOCAB = 151936


def timed(fn, dev: str, repeats: int) -> float:
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def case(n: int, hidden: int, vocab: int, fused: bool, chunk: int, dev: str, repeats: int) -> dict:
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    h = torch.randn(n, hidden, device=dev, dtype=dtype, generator=g).requires_grad_()
    w = (torch.randn(vocab, hidden, device=dev, dtype=dtype, generator=g) * 0.02).requires_grad_()
    tgt = torch.randint(0, vocab, (n,), device=dev, generator=g)
    kw = dict(chunk_size=chunk, fused=fused)

    def train():
        lp, ent = token_logprobs_entropy(h[None], w, tgt[None], with_entropy=True, **kw)
        (lp.sum() + 0.01 * ent.sum()).backward()
        h.grad = w.grad = None

    def logprobs():
        with torch.no_grad():
            token_logprobs_entropy(h[None], w, tgt[None], with_entropy=False, **kw)

    base = torch.cuda.memory_allocated() if dev == "cuda" else 0
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row = {"train_s": timed(train, dev, repeats), "logprobs_s": timed(logprobs, dev, repeats)}
    if dev == "cuda":
        row["peak_extra_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="60000x896,35000x1536", help="TOKENSxHIDDEN, a comma list")
    p.add_argument("--chunks", default="1024,2048", help="plain chunk (first), then the fused ones")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: 96 x 32, vocabulary 500")
    a = p.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    vocab = VOCAB
    if a.tiny:
        a.cases, a.chunks, a.repeats, vocab = "96x32", "32,64", 1, 500
    fused_ok = HAS_TRITON and (dev == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")
    plain_chunk, *fused_chunks = [int(c) for c in a.chunks.split(",")]
    rows = []
    for spec in a.cases.split(","):
        n, hidden = (int(x) for x in spec.split("x"))
        plain = case(n, hidden, vocab, False, plain_chunk, dev, a.repeats)
        rows.append(dict(case=spec, path="plain (torch)", chunk=plain_chunk, **plain))
        if dev == "cuda":
            x = torch.randn(n, hidden, device=dev, dtype=torch.bfloat16)
            wt = torch.randn(vocab, hidden, device=dev, dtype=torch.bfloat16)
            c = max(fused_chunks or [plain_chunk])
            mm = timed(lambda: [x[s : s + c] @ wt.T for s in range(0, n, c)], dev, a.repeats)
            rows[-1]["matmul_s"] = mm
            del x, wt
        for chunk in fused_chunks if fused_ok else []:
            r = case(n, hidden, vocab, True, chunk, dev, a.repeats)
            r["speedup"] = plain["train_s"] / r["train_s"]
            rows.append(dict(case=spec, path="fused (Triton)", chunk=chunk, **r))
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"\nlm head, logprob + entropy, vocabulary {vocab:,}, {name}, torch {torch.__version__}")
    cols = [
        "case",
        "path",
        "chunk",
        "train_s",
        "logprobs_s",
        "peak_extra_gib",
        "matmul_s",
        "speedup",
    ]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols]
        print("| " + " | ".join(cells) + " |")
    if not fused_ok:
        print("(fused rows need triton on a GPU, or TRITON_INTERPRET=1 on the CPU)")
    return rows


if __name__ == "__main__":
    main()
