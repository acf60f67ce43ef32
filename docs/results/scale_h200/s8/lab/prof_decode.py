"""Lab: where a FastEngine decode step's GPU time goes, by kernel name (eager steps, torch.profiler).

PYTHONPATH=src:benchmarks python docs/results/scale_h200/s8/lab/prof_decode.py 1.5b:2048 0.5b:384
"""

import sys
from collections import defaultdict

import torch

from aha.rollout import SamplingParams
from aha.rollout.fast import FastEngine
from decode_step import model_for, replay_ms


def main():
    rows = 64
    for c in sys.argv[1:]:
        arch, _, new = c.partition(":")
        model = model_for(arch, "cuda")
        prompts = torch.randint(0, model.config.vocab_size, (rows, 128)).tolist()
        eng = FastEngine(model, max_num_seqs=rows, pack_weights=True)
        eng.generate(prompts, SamplingParams(temperature=1.0, max_tokens=int(new), seed=0))
        b = eng.batch
        with torch.no_grad():
            rep = replay_ms(b, rows)
            saved, b.pool = b.pool, None
            b.forward(rows)
            torch.cuda.synchronize()
            from torch.autograd import DeviceType
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    b.sample_update(rows, b.forward(rows), b.mode)
                torch.cuda.synchronize()
            b.pool = saved
        agg = defaultdict(lambda: [0, 0.0])
        for e in prof.events():
            if e.device_type == DeviceType.CUDA:
                a = agg[e.name[:90]]
                a[0] += 1
                a[1] += e.time_range.elapsed_us()
        tot = sum(v[1] for v in agg.values()) / 5
        print(
            f"\n{arch} ctx {128 + int(new)}: replay {rep:.3f} ms, eager kernel sum {tot / 1e3:.3f} ms"
        )
        print("| kernel | per step | us/step | us each | share |")
        print("|---|---|---|---|---|")
        for name, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
            print(f"| {name} | {n / 5:.0f} | {us / 5:.1f} | {us / n:.2f} | {us / 5 / tot:.3f} |")
        eng.release()
        del eng, model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
