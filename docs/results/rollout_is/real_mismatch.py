"""Lab (session 11): how far the engine's sampling logprobs are from the trainer's on a real model, and what the
rollout correction (algorithm.rollout_is) does with them.

    python .lab/real_mismatch.py --model M.gguf --prompts 64 --n 8 --new 512 --device cuda

One batch per engine (HF generate, FastEngine with a bf16 KV cache, FastEngine with fp8), the trainer's logprobs
of the same tokens (aha.train.forward.sequence_logprobs, the training forward in the model's dtype), then per
token |d| (d = trainer - engine), per sequence sum(d), and each rollout_is mode's weight mean / cut share."""

import argparse
import os
import random
import statistics
import time

import torch

from aha.algos.losses import rollout_is_weights
from aha.models.load import load_model
from aha.rollout.base import SamplingParams
from aha.rollout.fast.engine import FastEngine
from aha.rollout.hf import HFEngine
from aha.train.batching import build_batch
from aha.train.forward import sequence_logprobs


def prompts_for(tok, k, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(k):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        op = rng.choice("+*")
        msg = [{"role": "user", "content": f"What is {a} {op} {b}? Think step by step, then give the answer."}]
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(msg, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
        else:
            ids = tok(msg[0]["content"]).input_ids
        out.append(list(ids))
    return out


def hf_decode(model, prompts, params, pad):
    """HF generate's own decode-time logits (KV cache, bf16): the logprob any cached decoder reports."""
    from aha.rollout.base import Completion

    out = []
    for i in range(0, len(prompts), 16):
        chunk = prompts[i : i + 16]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=model.device)
        mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in chunk])[:, None]).long()
        torch.manual_seed(i)
        g = model.generate(
            input_ids=ids, attention_mask=mask.to(model.device), do_sample=True, temperature=1.0, top_p=1.0,
            top_k=0, max_new_tokens=params.max_tokens, num_return_sequences=params.n, output_logits=True,
            return_dict_in_generate=True, eos_token_id=list(params.stop_token_ids), pad_token_id=pad,
        )
        new = g.sequences[:, width:]
        tok_lp = torch.stack(
            [torch.log_softmax(l.float(), -1).gather(1, new[:, j, None])[:, 0] for j, l in enumerate(g.logits)], 1
        )
        for r in range(new.shape[0]):
            ids_r = new[r].tolist()
            n = len(ids_r)
            for j, t in enumerate(ids_r):
                if t in params.stop_token_ids:
                    n = j + 1
                    break
            out.append(Completion(prompt_index=i + r // params.n, text="", token_ids=ids_r[:n],
                                  logprobs=tok_lp[r, :n].tolist(),
                                  finish_reason="stop" if n < len(ids_r) or ids_r[-1] in params.stop_token_ids else "length"))
    return out


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--engines", default="hf,fast,fast-fp8")
    a = ap.parse_args()
    t0 = time.time()
    model, tok = load_model(a.model, device=a.device, dtype=a.dtype)
    model.eval()
    print(f"loaded {a.model} in {time.time() - t0:.1f} s: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {model.dtype}, {model.device}")
    prompts = prompts_for(tok, a.prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    from aha.models.tokenizer import stop_token_ids

    params = SamplingParams(n=a.n, temperature=1.0, max_tokens=a.new, seed=0, stop_token_ids=stop_token_ids(tok, model))
    print("| engine | tokens | mean len | trunc | mean abs d | p99 abs d | max abs d | seq sum d: mean | std | mode | c_max | weight mean | cut share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in a.engines.split(","):
        os.environ["AHA_FAST_TRITON"] = "0" if "notriton" in name else "1"
        t1 = time.time()
        import aha.rollout.fast.model_runner as mr

        mr.FP8_LM_HEAD = "bf16head" not in name  # session 12: fp8 weights with the model's lm head
        if name == "hfdecode":
            comps = hf_decode(model, prompts, params, pad)
        else:
            if name == "hf":
                eng = HFEngine(model, tok)
            else:
                eng = FastEngine(
                    model,
                    tok,
                    kv_cache_dtype="fp8" if name.endswith("fp8") else "auto",
                    # session 12: fast-w8* decode on fp8 weights (weights_dtype="fp8")
                    **({"weights_dtype": "fp8"} if "-w8" in name else {}),
                    pack_weights=False if "nopack" in name else None,
                )
            comps = eng.generate(prompts, params)
            del eng
        gen_s = time.time() - t1
        b = build_batch(prompts, comps, None, pad, params=params)
        logp = torch.zeros_like(b.sampler_logp)
        with torch.no_grad():
            for i in range(0, len(b), 32):
                idx = list(range(i, min(i + 32, len(b))))
                mb = b.select(idx).to(model.device)
                lp, _ = sequence_logprobs(model, mb.input_ids, mb.attention_mask, temperature=1.0,
                                          prompt_lens=mb.prompt_lens, padded_right=True)
                logp[idx, : lp.shape[1]] = lp.float().cpu()
        m = b.loss_mask.bool()
        d = (logp - b.sampler_logp)[m]
        seq = [float(((logp - b.sampler_logp) * b.loss_mask)[i].sum()) for i in range(len(b))]
        lens = [len(c.token_ids) for c in comps]
        trunc = sum(c.finish_reason == "length" for c in comps) / len(comps)
        head = (f"| {name} | {int(m.sum())} | {statistics.mean(lens):.0f} | {trunc:.2f} | {d.abs().mean():.2e} | "
                f"{q(d.abs().tolist(), 0.99):.2e} | {d.abs().max():.2e} | {statistics.mean(seq):+.3f} | {statistics.pstdev(seq):.3f}")
        kl = float(-((logp - b.sampler_logp) * b.loss_mask).sum() / b.loss_mask.sum())
        head += f" (KL {kl:.2e}/token)"
        for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
            for cmax in (3.0,):
                w, met = rollout_is_weights(logp, b.sampler_logp, b.loss_mask, mode, c_max=cmax)
                print(f"{head} | {mode} | {cmax} | {float(met['is_weight_mean']):.4f} | {float(met['is_cut_frac']):.4f} |")
                head = "| | | | | | | | | "
        print(f"  ({name}: generate {gen_s:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
