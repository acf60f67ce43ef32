"""`aha demo` end to end at toy size on the shipped tiny-base (the real command's code path), its GPU preset's
errors, the GPU variant's pretraining recipe, and the re-checking variant (--recheck, shipped tiny-recheck)."""

import json
from pathlib import Path

import pytest
import torch

from aha.cli import main
from aha.config import ConfigError, load_config
from aha.demo.pretrain import PretrainConfig
from aha.demo.run import GPU_BASE, demo_config, run_demo

TOY = (
    "steps=2",
    "batch.prompts_per_step=2",
    "sampling.group_size=2",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=12",
    "logging.eval_every=0",
    "optim.warmup_steps=0",
)


def test_demo_runs_and_writes_summary(tmp_path):
    out = tmp_path / "demo"
    lines = []
    s = run_demo(out=str(out), overrides=TOY, log=lines.append, eval_size=3, eval_k=2)
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(s))
    for key in ("pass1_before", "pass1_after", "format_before", "format_after"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["steps"] == 2 and saved["seconds"] > 0 and len(saved["length_curve"]) == 2
    assert len((out / "eval_before" / "samples.jsonl").read_text().splitlines()) == 3 * 2
    assert len((out / "eval_after" / "samples.jsonl").read_text().splitlines()) == 3 * 2
    assert list((out / "report").glob("*.png")) and any("pass@1" in line for line in lines)


def test_demo_gpu_preset_errors_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/pretrain/tiny-base-gpu here
    code = main(["demo", "--gpu", "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    if torch.cuda.is_available():  # then the missing base model is the problem
        assert "aha pretrain configs/pretrain_gpu.yaml" in err
    else:
        assert "CUDA" in err and "aha demo" in err


def test_demo_rejects_stray_argument(capsys):
    assert main(["demo", "stray"]) == 2
    assert "usage: aha demo" in capsys.readouterr().err


def test_gpu_variant_recipe_loads():
    cfg = load_config(
        PretrainConfig, Path(__file__).parents[1] / "configs" / "pretrain_gpu.yaml", []
    )
    assert cfg.out_dir == GPU_BASE and cfg.device == "cuda"
    m = cfg.model
    # Qwen2 with tied embeddings: per layer q,o (H*H) + k,v (H*kv_dim) + MLP (3*H*I) + 2 norms; then embeddings
    kv = m.hidden_size // m.num_heads * m.num_kv_heads
    per_layer = (
        2 * m.hidden_size**2
        + 2 * m.hidden_size * kv
        + 3 * m.hidden_size * m.intermediate_size
        + m.hidden_size
        + 2 * kv
        + 2 * m.hidden_size
    )
    n = m.num_layers * per_layer + 908 * m.hidden_size + m.hidden_size
    assert 20e6 <= n <= 50e6, n


def test_recheck_preset_and_its_shipped_model(tmp_path):
    cfg = demo_config(False, str(tmp_path), [], recheck=True)
    assert cfg.model.path == "tiny-recheck" and cfg.sampling.max_new_tokens == 192
    assert (
        demo_config(
            False, str(tmp_path), ["sampling.max_new_tokens=64"], recheck=True
        ).sampling.max_new_tokens
        == 64
    )
    with pytest.raises(ConfigError, match="choose one"):
        demo_config(False, str(tmp_path), [], gpu=True, recheck=True)
    # (the whole recipe.json against configs/pretrain_recheck.yaml: tests/test_demo_pretrain.py)


def test_recheck_flags_errors_in_one_line(capsys):
    assert main(["demo", "--gpu", "--recheck"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "choose one" in err
    assert main(["demo", "--rechek"]) == 2
    assert "--recheck" in capsys.readouterr().err  # the valid switches are named


def test_missing_builtin_model_names_its_recipe(monkeypatch, tmp_path):
    from aha.models import load
    from aha.models.load import ModelLoadError, load_model

    monkeypatch.setitem(load.BUILTIN, "tiny-recheck", tmp_path / "gone")
    with pytest.raises(
        ModelLoadError,
        match="aha pretrain configs/pretrain_recheck.yaml.*model.path=runs/pretrain/tiny-recheck",
    ):
        load_model("tiny-recheck", device="cpu")


def test_recheck_demo_runs_on_the_shipped_model(tmp_path):
    out = tmp_path / "rc"
    s = run_demo(
        out=str(out), overrides=TOY, log=lambda *_: None, eval_size=2, eval_k=2, recheck=True
    )
    cfg = (out / "config.yaml").read_text()
    assert "tiny-recheck" in cfg and s["steps"] == 2 and 0.0 <= s["pass1_after"] <= 1.0
