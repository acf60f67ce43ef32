"""Every recipe in configs/ loads, validates, and runs one step (on the tiny random model, to stay fast)."""

from pathlib import Path

import pytest

from aha.config import load_config
from aha.train.config import TrainConfig
from aha.train.grpo import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RL = ["grpo.yaml", "dr_grpo.yaml", "dapo.yaml"]


@pytest.mark.parametrize("name", RL)
def test_preset_runs_one_step(name, tmp_path):
    cfg = load_config(
        TrainConfig,
        CONFIGS / name,
        [
            "model.path=tiny-random",
            "steps=1",
            "batch.prompts_per_step=2",
            "batch.micro_batch_size=16",
            "sampling.max_new_tokens=8",
            "eval.limit=2",
            "eval.k=2",
            "logging.progress=false",
            "rewards.num_workers=1",
            f"out={tmp_path}",
        ],
    )
    summary = train(cfg)
    assert summary["steps"] == 1 and (tmp_path / "metrics.jsonl").is_file()
