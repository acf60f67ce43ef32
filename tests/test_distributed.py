"""1 process vs 2 processes (torchrun, gloo, FSDP2) on the tiny model with a fixed seed: same losses and the same
weights after a few steps; and a 2-process checkpoint resumes in 1 process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from run_metrics import finish

COMMON = [
    "model.path=tiny-random",
    "task.name=arithmetic",
    "sampling.group_size=4",
    "batch.prompts_per_step=4",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=10",
    "sampling.seed_per_prompt=true",
    "optim.lr=1e-2",
    "algorithm.beta=0.05",
    "algorithm.agg=token-mean",
    "logging.progress=false",
    "logging.samples_every=0",
    "rewards.num_workers=1",
    "checkpoint.save_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
]


def start(out, nproc, *extra):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
        "OMP_NUM_THREADS": "1",
    }
    if nproc == 1:
        cmd = [sys.executable, "-m", "aha", "train"]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "aha",
            "train",
        ]
    proc = subprocess.Popen(
        cmd + COMMON + [f"out={out}", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, out


def run(out, nproc, *extra):
    return finish(start(out, nproc, *extra))


def weights(out, step):
    return load_file(Path(out) / "checkpoints" / f"step-{step:06d}" / "model.safetensors")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    # the 1-process run goes on to step 4 (saving at 3 and 4): the reference for both the 2-process run's 3
    # steps and its resume, without a second process for the reference
    # (side by side: much of each is start-up -- imports, torchrun, the reward workers -- that overlaps)
    one = start(tmp_path / "one", 1, "steps=4", "checkpoint.save_every=3")
    try:
        two = finish(start(tmp_path / "two", 2, "steps=3"))
    except BaseException:
        one[0].kill()
        raise
    one = finish(one)
    assert [r["step"] for r in one] == [1, 2, 3, 4] and [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(one, two):
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-9)  # the same samples
        for key in ("loss", "kl", "entropy", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    assert one[2]["reward/std"] > 0  # a real update happened
    w1, w2 = weights(tmp_path / "one", 3), weights(tmp_path / "two", 3)
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k
    # resume the 2-process run's checkpoint in 1 process: it continues as the uninterrupted 1-process run
    more = run(tmp_path / "two", 1, "steps=4", "resume=true")
    assert more[-1]["step"] == 4 and more[-1]["loss"] == pytest.approx(
        one[3]["loss"], rel=1e-4, abs=1e-6
    )
