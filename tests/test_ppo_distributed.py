"""PPO in 1 process vs 2 (torchrun, gloo, FSDP2): the critic sharded, whitening, KL controller and value loss
reduced over ranks give the same metrics and weights; a 2-process checkpoint (critic included) resumes in 1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from run_metrics import finish

HERE = Path(__file__).resolve().parent
COMMON = [
    "model.path=tiny-random",
    "model.device=cpu",
    "task.name=arithmetic",
    "sampling.group_size=4",
    "batch.prompts_per_step=4",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=10",
    "sampling.seed_per_prompt=true",
    "optim.lr=1e-2",
    "algorithm.name=ppo",
    "algorithm.advantage=gae",
    "algorithm.agg=token-mean",
    "algorithm.mu=2",
    "logging.progress=false",
    "logging.samples_every=0",
    "rewards.num_workers=1",
    "checkpoint.save_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
]
# k1 KL in the reward with the adaptive controller: its statistic must be the global one on every rank
SETTINGS = [
    "algorithm.reward_kl_coef=0.1",
    "algorithm.kl_ctrl=adaptive",
    "algorithm.kl_target=1e-4",
    "algorithm.kl_horizon=40",
]


def start(out, nproc, *extra):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    launcher = (
        [sys.executable]
        if nproc == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
        ]
    )
    proc = subprocess.Popen(
        launcher + [__file__, *COMMON, *SETTINGS, f"out={out}", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, out


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
    assert one[2]["value/loss"] > 0 and one[2]["kl_reward"] != 0  # the critic and KL did work
    for a, b in zip(one, two):
        # (not value/clip_frac: a count of tokens; one token within float noise of the clip boundary flips it --
        # seen: 0.047 vs 0.053 at step 3 with every loss equal to 1e-5)
        for key in (
            "reward/mean",
            "loss",
            "kl",
            "grad_norm",
            "value/loss",
            "value/grad_norm",
            "kl_coef",
            "kl_reward",
        ):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    for part in ("", "value/"):
        w1 = load_file(
            tmp_path / "one" / "checkpoints" / "step-000003" / part / "model.safetensors"
        )
        w2 = load_file(
            tmp_path / "two" / "checkpoints" / "step-000003" / part / "model.safetensors"
        )
        assert w1.keys() == w2.keys()
        for k in w1:
            assert torch.allclose(w1[k], w2[k], atol=1e-5), (part, k)
    # resume the 2-process run's checkpoint (critic included) in 1 process: it continues as the uninterrupted
    # 1-process run
    more = finish(start(tmp_path / "two", 1, "steps=4", "resume=true"))
    for key in ("loss", "value/loss", "kl_coef"):
        assert more[-1][key] == pytest.approx(one[3][key], rel=1e-4, abs=1e-6), key


if (
    __name__ == "__main__"
):  # the training process: python THIS_FILE overrides... (or under torchrun)
    torch.set_num_threads(1)
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.ppo import train

    train(load_config(TrainConfig, None, sys.argv[1:]))
