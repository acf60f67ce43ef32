"""GRPO end to end on a tiny random model: it learns a trivially learnable reward, writes loadable files,
resumes exactly where it stopped, and saves on SIGTERM."""

import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest

from aha.config import load_config
from aha.train.config import TrainConfig
from aha.train.grpo import GRPOTrainer, train

BASE = [
    "model.path=tiny-random",
    "task.name=arithmetic",
    "sampling.group_size=4",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=12",
    "logging.progress=false",
    "logging.samples_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
    "rewards.num_workers=1",
]


def cfg(tmp_path, *extra):
    return load_config(TrainConfig, None, BASE + [f"out={tmp_path}", *extra])


def metrics(run):
    return [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_learns_trivial_reward_and_writes_files(tmp_path):
    train(
        cfg(
            tmp_path,
            "steps=30",
            "optim.lr=3e-3",
            "sampling.group_size=8",
            "batch.micro_batch_size=8",
            "checkpoint.save_every=10",
            "checkpoint.keep_last=2",
            "logging.samples_every=10",
        )
    )
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 31))
    for key in (
        "reward/mean",
        "reward/std",
        "loss",
        "entropy",
        "grad_norm",
        "lr",
        "len/mean",
        "frac_truncated",
        "frac_reward_zero_std",
        "clip_frac_low",
        "tokens_per_s",
        "time/generate",
        "time/update",
    ):
        assert all(r[key] is not None and math.isfinite(r[key]) for r in rows), key
    first = sum(r["reward/mean"] for r in rows[:5]) / 5
    last = sum(r["reward/mean"] for r in rows[-5:]) / 5
    assert first < 0.05 and last > 3 * first + 0.05, (first, last)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step-000020", "step-000030"]  # keep_last=2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoints" / "step-000030")
    AutoTokenizer.from_pretrained(tmp_path / "checkpoints" / "step-000030")
    assert model.config.num_hidden_layers == 2
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "samples.jsonl").read_text().count(
        "\n"
    ) == 6  # 1 per prompt, 3 times


def test_the_logged_lr_is_the_rate_each_step_took(tmp_path):
    """Warm-up over 5 optimizer steps: the first takes lr/5 and logs it (it logged the next step's rate)."""
    steps = ["steps=2", "optim.lr=1e-3", "optim.warmup_steps=5", "optim.schedule=constant"]
    train(cfg(tmp_path / "one", *steps, "checkpoint.save_every=0"))
    assert [r["lr"] for r in metrics(tmp_path / "one")] == pytest.approx([2e-4, 4e-4])
    train(cfg(tmp_path / "two", *steps, "algorithm.mu=2", "checkpoint.save_every=0"))
    assert [r["lr"] for r in metrics(tmp_path / "two")] == pytest.approx(
        [4e-4, 8e-4]
    )  # the last of mu


@pytest.mark.parametrize(
    "dtype", ["float32", "bfloat16"]
)  # bf16: the fp32 master weights must resume too
def test_resume_continues_exactly(tmp_path, dtype):
    extra = [
        "steps=6",
        "optim.lr=1e-2",
        "algorithm.mu=2",
        "algorithm.beta=0.05",
        "optim.schedule=cosine",
        "optim.warmup_steps=2",
        f"model.dtype={dtype}",
    ]
    train(cfg(tmp_path / "full", *extra))
    part = GRPOTrainer(cfg(tmp_path / "part", *extra))
    step = part.train_step

    def stop_after_3(k):  # as if SIGTERM arrived during step 3
        part.stop_requested = k == 3
        return step(k)

    part.train_step = stop_after_3
    try:
        assert part.fit()["steps"] == 3
    finally:
        part.close()
    train(cfg(tmp_path / "part", *extra, "resume=true"))  # ... and resume to 6
    full, part = metrics(tmp_path / "full"), metrics(tmp_path / "part")
    assert [r["step"] for r in part] == list(range(1, 7))
    for a, b in zip(full, part):
        for key in ("reward/mean", "loss", "kl", "grad_norm", "lr", "len/mean", "entropy"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)


def test_sigterm_saves_and_exits(tmp_path):
    c = cfg(tmp_path, "steps=1000", "checkpoint.save_every=0")
    trainer = GRPOTrainer(c)
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        summary = trainer.fit()
    finally:
        timer.cancel()
        trainer.close()
    assert summary["stopped_early"] and 0 < summary["steps"] < 1000
    saved = sorted((tmp_path / "checkpoints").iterdir())
    assert saved[-1].name == f"step-{summary['steps']:06d}"
    assert (
        json.loads((saved[-1] / "state.json").read_text())["data_position"] == 2 * summary["steps"]
    )


def run_cli(capsys, *args):
    """`aha train ...` through the CLI's entry point, in this process (a subprocess per run cost ~10 s of
    imports and reward-worker start-up; tests/test_distributed.py runs `python -m aha train` as a process)."""
    from aha.cli import main

    capsys.readouterr()
    assert main(["train", *BASE, *args]) == 0
    return capsys.readouterr().out


def test_cli_train_runs(tmp_path, capsys):
    assert "done: 2 steps" in run_cli(capsys, "steps=2", f"out={tmp_path}")
    # resumed to 3: the line says where it started, not "3 steps"
    out = run_cli(capsys, "steps=3", "resume=true", f"out={tmp_path}")
    assert "done: step 3 (1 step in " in out and "after resuming at step 2)" in out


def test_a_resume_that_does_not_fit_the_checkpoint_keeps_the_runs_config(tmp_path):
    """A resume with other LoRA settings fails in one line naming the changed keys, and config.yaml still
    describes the checkpoints (it was rewritten with the failed attempt's settings before the load)."""
    from aha.train.checkpoint import CheckpointMismatch

    train(cfg(tmp_path, "steps=1", "model.lora.r=4", "eval.limit=0"))
    saved = (tmp_path / "config.yaml").read_text()
    with pytest.raises(CheckpointMismatch, match=r"config.yaml differs: model.lora.r: 4 -> 8"):
        train(cfg(tmp_path, "steps=2", "model.lora.r=8", "eval.limit=0", "resume=true"))
    assert (tmp_path / "config.yaml").read_text() == saved
