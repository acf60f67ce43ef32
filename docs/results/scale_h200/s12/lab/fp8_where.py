"""Lab (session 12, CPU): where fp8 decode weights move a real model's policy. SmolLM2-135M-Instruct (GGUF) in fp32
on the CPU, FastEngine's torch paths (the fp8 arithmetic emulated exactly: e4m3 values, fp32 products), against
the trainer's fp32 logprobs of the same tokens: KL(engine, trainer) per token, mean length, truncation.

    PYTHONPATH=src python docs/results/scale_h200/s12/lab/fp8_where.py --model smol.gguf --prompts 16 --n 4 --new 256

Variants (monkeypatched, lab only): bf16 (no fp8 weights; fp32 here), w8 (weights per output channel,
activations per row, the lm head in fp8 too: FP8_LM_HEAD on, as first built), w8-head (the same with the model's
lm head: what aha ships), w8-block (activations per block of 128 columns, fp8 lm head), w8-keep-X (one
projection kind left in fp32, fp8 lm head). The run in fp8_where.txt predates the lm-head default (it ran with
the code of this session's first fp8 version, where _fp8[-1] was the head)."""

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, "docs/results/rollout_is")
from real_mismatch import prompts_for  # noqa: E402

import aha.rollout.fast.fp8_linear as f8  # noqa: E402
import aha.rollout.fast.model_runner as mr  # noqa: E402
from aha.models.load import load_model  # noqa: E402
from aha.models.tokenizer import stop_token_ids  # noqa: E402
from aha.rollout.base import SamplingParams  # noqa: E402
from aha.rollout.fast.engine import FastEngine  # noqa: E402
from aha.train.batching import build_batch  # noqa: E402
from aha.train.forward import sequence_logprobs  # noqa: E402

ROWS = f8.quantize_rows


def per_block(x, group=128):
    """Stands in for quantize_rows: values quantized per block of `group` columns, handed over dequantized with
    a unit scale (fp8_linear_torch multiplies them back)."""
    M, K = x.shape
    nb = -(-K // group)
    xf = torch.nn.functional.pad(x.float(), (0, nb * group - K)).view(M, nb, group)
    s = xf.abs().amax(2, keepdim=True).clamp(min=1e-30) / 448.0
    deq = ((xf / s).to(f8.E4M3).float() * s).view(M, nb * group)[:, :K].contiguous()
    return deq, torch.ones(M)


def exact(x):
    """No activation quantization at all."""
    return x.float(), torch.ones(x.shape[0])


def keep(kind):
    """Leave one projection kind unquantized: its fp8 weight replaced by the fp32 one (scale 1)."""
    orig = mr.ModelRunner._pack_fp8

    def pack(self):
        n = orig(self)
        groups = self._fp8_groups()
        views = [v for layer in self._fp8 for v in layer]
        for g, (w, sc, b), idx in zip(groups, views, range(len(views))):
            if {0: "qkv", 1: "gate_up", 2: "down"}[idx % 3] == kind:
                full = torch.cat([m.weight.detach().float() for m in g])
                views[idx] = (full, torch.ones(full.shape[0]), b)
        self._fp8 = [tuple(views[k : k + 3]) for k in range(0, len(views), 3)]
        return n

    return pack


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--variants", default="bf16,w8,w8-head,w8-block,w8-exact-x,w8-keep-qkv,w8-keep-gate_up,w8-keep-down")
    a = ap.parse_args()
    torch.set_num_threads(2)
    model, tok = load_model(a.model, device="cpu", dtype="float32")
    prompts = prompts_for(tok, a.prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    params = SamplingParams(n=a.n, temperature=1.0, max_tokens=a.new, seed=0, stop_token_ids=stop_token_ids(tok, model))
    print(f"SmolLM2 fp32 CPU, {a.prompts} prompts x {a.n}, <= {a.new} tokens, torch {torch.__version__}")
    print("| variant | KL / token | mean abs d | mean len | truncated | generate s |")
    print("|---|---|---|---|---|---|")
    orig_pack = mr.ModelRunner._pack_fp8
    for v in a.variants.split(","):
        mr.FP8_LM_HEAD = "head" not in v  # w8-head: the model's lm head
        f8.quantize_rows = per_block if "block" in v else exact if "exact-x" in v else ROWS
        mr.ModelRunner._pack_fp8 = keep(v.split("keep-")[1]) if "keep-" in v else orig_pack
        t = time.time()
        eng = FastEngine(model, tok, weights_dtype="auto" if v == "bf16" else "fp8")
        comps = eng.generate(prompts, params)
        gen = time.time() - t
        b = build_batch(prompts, comps, None, pad, params=params)
        logp = torch.zeros_like(b.sampler_logp)
        with torch.no_grad():
            for i in range(0, len(b), 16):
                idx = list(range(i, min(i + 16, len(b))))
                mb = b.select(idx)
                lp, _ = sequence_logprobs(model, mb.input_ids, mb.attention_mask, temperature=1.0,
                                          prompt_lens=mb.prompt_lens, padded_right=True)
                logp[idx, : lp.shape[1]] = lp.float()
        m = b.loss_mask
        d = (logp - b.sampler_logp) * m
        kl = float(-d.sum() / m.sum())
        lens = [len(c.token_ids) for c in comps]
        trunc = sum(c.finish_reason == "length" for c in comps) / len(comps)
        print(f"| {v} | {kl:.2e} | {float(d.abs().sum() / m.sum()):.2e} | {statistics.mean(lens):.0f} | {trunc:.2f} | {gen:.0f} |", flush=True)


if __name__ == "__main__":
    main()
