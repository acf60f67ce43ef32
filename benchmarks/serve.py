"""`aha serve` on one GPU: correctness checks, then streamed throughput through the `openai` client against the
engine called directly.

    python benchmarks/serve.py [--model 0.5b] [--clients 64] [--requests 3] [--prompt 128] [--max-tokens 256]
    python benchmarks/serve.py --model tiny --device cpu --clients 4 --max-tokens 16     # a CPU smoke run

Random Qwen2.5-0.5B-architecture weights (bf16 on the GPU), a char tokenizer padded to the vocabulary (every id
decodes), nothing downloaded; the server runs in this process (AhaServer, uvicorn in a thread) on the engine
`make_engine("auto")` picks (FastEngine on a GPU).
Checks: a seeded streamed completion equals the non-streamed one (n=2, a stop string taken from its own text);
a client that disconnects after a few chunks has its completion aborted (the engine stops being asked for it).
Load: `clients` threads each send `requests` streaming completions (a random prompt of `prompt` tokens,
`max-tokens` new tokens, temperature 1); reported: generated tokens/s, time to first text p50/p95, and the
same work as direct engine.generate calls of `clients` prompts (the ceiling; the gap is the server's cost:
HTTP, SSE per token, and requests that arrive while a call runs waiting for the next one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import torch

sys.path.insert(0, "src")
from _common import require_cuda  # noqa: E402
from aha.models.tiny import char_tokenizer, tiny_model  # noqa: E402
from aha.rollout import SamplingParams  # noqa: E402
from aha.rollout.factory import make_engine  # noqa: E402
from aha.serve import AhaServer  # noqa: E402

QWEN05 = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
              num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
              rope_theta=1000000.0, tie_word_embeddings=True)  # fmt: skip


class Watch:
    """Engine wrapper: counts on_tokens deliveries per call, to see an abandoned completion stop."""

    def __init__(self, engine):
        self.engine, self.model, self.delivered = engine, engine.model, []

    def generate(self, prompts, params, on_tokens=None):
        seen = self.delivered
        seen.clear()

        def cb(i, ids):
            seen.append(i)
            return None if on_tokens is None else on_tokens(i, ids)

        return self.engine.generate(prompts, params, on_tokens=cb)


def build(name: str, device: str):
    if name == "tiny":
        tok = char_tokenizer()
        return tiny_model(len(tok), seed=0).to(device).eval(), tok
    from transformers import AutoModelForCausalLM, Qwen2Config

    tok = char_tokenizer(vocab_size=QWEN05["vocab_size"])
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN05), dtype=torch.bfloat16)
    return model.eval(), tok


def checks(client, engine, tok, ctx: int) -> None:
    kw = dict(model="bench", prompt="12+7=", max_tokens=48, n=2, seed=3)
    text = client.completions.create(**kw).choices[0].text
    stop = text[20:23] if len(text) > 23 else "@@"
    full = [c.text for c in client.completions.create(**kw, stop=stop).choices]
    parts = {0: "", 1: ""}
    for ch in client.completions.create(**kw, stop=stop, stream=True):
        for c in ch.choices:
            parts[c.index] += c.text
    print(f"check stream == non-stream (n=2, stop {stop!r}): {[parts[0], parts[1]] == full}")
    long = min(4000, ctx - 8)
    stream = client.completions.create(model="bench", prompt="hi", max_tokens=long, stream=True)
    for k, _ in enumerate(stream):
        if k == 5:
            break
    stream.close()
    time.sleep(1.0)
    n = len(engine.delivered)
    time.sleep(1.0)
    print(
        f"check disconnect aborts: deliveries stopped at {n} ({len(engine.delivered) == n}), of {long} tokens"
    )


def load(client, tok, args) -> tuple[float, list[float]]:
    ttft, tokens, lock = [], [0], threading.Lock()

    def one(seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        for _ in range(args.requests):
            prompt = torch.randint(3, len(tok), (args.prompt,), generator=g).tolist()
            t, first, n = time.perf_counter(), None, 0
            for ch in client.completions.create(model="bench", prompt=prompt, max_tokens=args.max_tokens,
                                                stream=True, stream_options={"include_usage": True}):  # fmt: skip
                if first is None and ch.choices and ch.choices[0].text:
                    first = time.perf_counter() - t
                if ch.usage is not None:
                    n = ch.usage.completion_tokens
            with lock:
                ttft.append(first or 0.0)
                tokens[0] += n

    threads = [threading.Thread(target=one, args=(s,)) for s in range(args.clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return tokens[0] / (time.perf_counter() - t), ttft


def direct(engine, tok, args) -> float:
    g = torch.Generator().manual_seed(0)
    params = SamplingParams(max_tokens=args.max_tokens, stop_token_ids=[tok.eos_token_id])
    total, t = 0, time.perf_counter()
    for _ in range(args.requests):
        prompts = torch.randint(3, len(tok), (args.clients, args.prompt), generator=g).tolist()
        total += sum(len(c.token_ids) for c in engine.generate(prompts, params))
    return total / (time.perf_counter() - t)


def main() -> None:
    import openai

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="0.5b", choices=["0.5b", "tiny"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()
    require_cuda(args.device)
    model, tok = build(args.model, args.device)
    engine = Watch(make_engine("auto", model, tok))
    print(f"engine: {type(engine.engine).__name__} on {args.device}; model {args.model}")
    with AhaServer(engine, tok, "bench", max_batch_prompts=max(64, args.clients)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=600)
        checks(client, engine, tok, server.api.prompts.ctx)
        load(
            client, tok, argparse.Namespace(**{**vars(args), "clients": 2, "requests": 1})
        )  # warm-up
        tps, ttft = load(client, tok, args)
    ceiling = direct(engine.engine, tok, args)
    q = statistics.quantiles(ttft, n=20)
    print(f"served: {args.clients} clients x {args.requests} streams of {args.max_tokens} tokens: "
          f"{tps:,.0f} tokens/s, time to first text p50 {statistics.median(ttft):.2f} s, p95 {q[18]:.2f} s")  # fmt: skip
    print(f"direct engine.generate, {args.clients} prompts per call: {ceiling:,.0f} tokens/s "
          f"(served / direct = {tps / ceiling:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
