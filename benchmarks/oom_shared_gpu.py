"""A real CUDA out-of-memory on a shared GPU, end to end (tests/test_oom.py injects the error on the CPU; this
checks torch's own message, the save after the error, and the memory plan's "other processes" line on a GPU).

    python benchmarks/oom_shared_gpu.py [--model 0.5b|DIR] [--steps 4] [--leave-gib 14]

The default model is the Qwen2.5-0.5B architecture with random weights (benchmarks/_qwen.py): tiny-random needs
so little memory that its step 2 still fits in the few MiB the hog leaves, and the run never runs out.

1. This process's CUDA context alone: total - free - torch's reserved (what held_by_others must not report).
2. For each phase (generation, update): a GRPO run on the GPU; at step 2 another process (the "hog") takes all
   but a few MiB of the GPU's free memory, after this process has handed its cached blocks back. Expect exit 75,
   one line naming the phase and "other processes hold", step 1 saved.
3. Resume while a hog holds all but `--leave-gib` GiB: the memory plan's table names what the others hold; the
   run completes (exit 0).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HOG = (  # in blocks: one allocation of all the free memory fails (the allocator rounds it up past the free)
    "import sys, torch\n"
    "free, total = torch.cuda.mem_get_info()\n"
    "room, held = max(0, free - int(float(sys.argv[1]) * 2**30)), []\n"
    "for size in (2**30, 2**26, 2**21):\n"
    "    while sum(x.numel() for x in held) + size <= room:\n"
    "        try:\n"
    "            held.append(torch.empty(size, dtype=torch.uint8, device='cuda'))\n"
    "        except torch.OutOfMemoryError:\n"
    "            break\n"
    "print('hog holds', round(sum(x.numel() for x in held) / 2**30, 2), 'GiB;',\n"
    "      round(torch.cuda.mem_get_info()[0] / 2**20), 'MiB left free', flush=True)\n"
    "sys.stdin.read()\n"
)


def hog(leave_gib: float) -> subprocess.Popen:
    """Another process that holds all of the GPU's free memory but leave_gib; ends when its stdin closes."""
    import torch

    torch.cuda.empty_cache()  # this process's cached blocks go back: its next allocations need new memory
    p = subprocess.Popen(
        [sys.executable, "-c", HOG, str(leave_gib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    print(p.stdout.readline().strip(), flush=True)
    return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--model", default="0.5b", help="a benchmarks/_qwen.py architecture or a model path"
    )
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument(
        "--leave-gib", type=float, default=14.0, help="what the resume's hog leaves free"
    )
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(
            "oom_shared_gpu.py needs a CUDA device (tests/test_oom.py is the CPU version)"
        )
    from _qwen import ARCHS, build  # a sibling module: the scripts run as python benchmarks/X.py

    if args.model in ARCHS:
        args.model = str(build(args.model, Path(tempfile.gettempdir()) / f"aha-oom-{args.model}"))
    import aha.train.update as update_module
    from aha.cli import main as aha
    from aha.train.grpo import GRPOTrainer

    free, total = torch.cuda.mem_get_info()
    context = total - free - torch.cuda.memory_reserved()
    print(
        f"CUDA context of this process: {context / 2**30:.2f} GiB (total {total / 2**30:.1f} GiB)"
    )
    base = [
        f"model.path={args.model}",
        "model.device=cuda",
        "task.name=arithmetic",
        "sampling.group_size=8",
        "batch.prompts_per_step=8",
        "sampling.max_new_tokens=64",
        "eval.limit=0",
        "checkpoint.save_every=0",
        "logging.progress=false",
        f"steps={args.steps}",
    ]
    for phase in ("generation", "update"):
        out = tempfile.mkdtemp(prefix=f"oom_{phase}_")
        hogs = []
        real_step, real_update = GRPOTrainer.train_step, update_module.PolicyUpdate.__call__

        def train_step(self, k, phase=phase, hogs=hogs):
            if k == 2 and phase == "generation" and not hogs:
                hogs.append(hog(0.0))
            return real_step(self, k)

        def update(self, batch, passes=None, phase=phase, hogs=hogs):
            if phase == "update" and not hogs and self.optimizer.state:  # step 2 onwards
                hogs.append(hog(0.0))
            return real_update(self, batch, passes)

        GRPOTrainer.train_step, update_module.PolicyUpdate.__call__ = train_step, update
        try:
            code = aha(["train", *base, f"out={out}"])
        finally:
            GRPOTrainer.train_step, update_module.PolicyUpdate.__call__ = real_step, real_update
            for p in hogs:
                p.stdin.close()
                p.wait()
        print(f"[{phase}] exit code {code} (75 expected)", flush=True)
        keeper = hog(args.leave_gib)  # resume beside another process that holds most of the GPU
        try:
            code = aha(["train", *base, f"out={out}", "resume=true"])
        finally:
            keeper.stdin.close()
            keeper.wait()
        print(f"[{phase}] resumed beside the hog: exit code {code} (0 expected)", flush=True)


if __name__ == "__main__":
    main()
