"""Checkpoints on a tiny model (hidden 32, 2 layers): exact round trip, fallback past a damaged latest
checkpoint, the mismatch message, safe loading of trainer_state.pt, weights-only saves, the disk-space check
and the measured peak disk use of a save (issue 17 item 3a/3d, issue 15 item 3)."""

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from transformers import LlamaConfig, LlamaForCausalLM

from aha.config import ConfigError
from aha.train import checkpoint as ckpt
from aha.train.checkpoint_files import dir_bytes, tensor_bytes, verify_checkpoint
from aha.train.optim import AdamWMaster, build_scheduler


class Tok:
    def save_pretrained(self, path):
        (path / "tokenizer.json").write_text("{}")


def tiny(dtype=torch.float32, hidden=32, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).to(dtype)
    opt = AdamWMaster(model.parameters(), lr=1e-2)
    sched = build_scheduler(opt, total=10, warmup=2, schedule="cosine", min_ratio=0.1)
    return model, opt, sched


def train_steps(model, opt, sched, n=2):
    for _ in range(n):
        loss = model(torch.randint(0, 64, (2, 8)), labels=torch.randint(0, 64, (2, 8))).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def save(run, step, model, opt, sched, **kw):
    return ckpt.save_checkpoint(
        run, step, model=model, tokenizer=Tok(), optimizer=opt, scheduler=sched, extra={}, **kw
    )


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_is_exact(tmp_path, dtype):
    model, opt, sched = tiny(dtype)
    train_steps(model, opt, sched)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save(tmp_path, 2, model, opt, sched)
    want_w, want_opt = params(model), json.dumps(str(opt.state_dict()))
    want = (random.random(), np.random.rand(), torch.rand(1))
    model2, opt2, sched2 = tiny(dtype, seed=5)
    train_steps(model2, opt2, sched2, 1)
    ckpt.load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    for k, v in params(model2).items():
        assert torch.equal(v, want_w[k]), k
    assert json.dumps(str(opt2.state_dict())) == want_opt and sched2.last_epoch == sched.last_epoch
    assert (random.random(), np.random.rand(), torch.rand(1)) == want
    # the weights are stored once: the safetensors, and state/ holds only AdamW's state
    info = json.loads((path / "state.json").read_text())
    assert info["weights"] == "hf" and info["optimizer"] is True
    keys = dcp.FileSystemReader(str(path / "state")).read_metadata().state_dict_metadata
    assert keys and all(k.startswith("optim.") for k in keys), sorted(keys)[:3]
    torch.load(path / "trainer_state.pt", weights_only=True)  # plain types only


DAMAGE = {
    "truncated .distcp": lambda p: _truncate(next((p / "state").glob("*.distcp"))),
    "missing .metadata": lambda p: (p / "state" / ".metadata").unlink(),
    "bad state.json": lambda p: (p / "state.json").write_text("{not json"),
    "truncated trainer_state.pt": lambda p: _truncate(p / "trainer_state.pt"),
    "truncated model.safetensors": lambda p: _truncate(p / "model.safetensors"),
}


def _truncate(f):
    with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_falls_back_with_one_line(tmp_path, damage, capsys):
    model, opt, sched = tiny()
    save(tmp_path, 1, model, opt, sched)
    good = params(model)
    train_steps(model, opt, sched)
    latest = save(tmp_path, 2, model, opt, sched)
    DAMAGE[damage](latest)
    capsys.readouterr()
    found = ckpt.latest_checkpoint(tmp_path)
    out = capsys.readouterr().out.strip().splitlines()
    assert found.name == "step-000001" and len(out) == 1
    assert (
        "step-000002 is incomplete or damaged" in out[0] and "falling back to step-000001" in out[0]
    )
    model2, opt2, sched2 = tiny(seed=9)
    assert ckpt.load_checkpoint(found, model=model2, optimizer=opt2, scheduler=sched2)["step"] == 1
    assert all(torch.equal(v, good[k]) for k, v in params(model2).items())


def test_only_damaged_checkpoints_mean_none(tmp_path, capsys):
    model, opt, sched = tiny()
    latest = save(tmp_path, 1, model, opt, sched)
    (latest / "state.json").unlink()
    assert ckpt.latest_checkpoint(tmp_path) is None
    assert "no earlier checkpoint to fall back to" in capsys.readouterr().out


def test_a_different_model_is_named_not_a_traceback(tmp_path):
    model, opt, sched = tiny()
    train_steps(model, opt, sched, 1)
    path = save(tmp_path, 1, model, opt, sched)
    other = tiny(hidden=48)
    with pytest.raises(RuntimeError, match="does not match this model/optimizer"):
        ckpt.load_checkpoint(path, model=other[0], optimizer=other[1], scheduler=other[2])
    # the same through torch.distributed.checkpoint (weights in state/, as under torchrun or LoRA): its
    # CheckpointException is a BaseException and must be caught too
    info = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps(info | {"weights": "state"}))
    with pytest.raises(RuntimeError, match="does not match this model/optimizer"):
        ckpt.load_checkpoint(path, model=other[0], optimizer=other[1], scheduler=other[2])


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_trainer_state_is_loaded_safely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, opt, sched = tiny()
    save(tmp_path, 1, model, opt, sched)
    evil = save(tmp_path, 2, model, opt, sched)
    torch.save({"scheduler": sched.state_dict(), "rng": _RunsCode()}, evil / "trainer_state.pt")
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000001"
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_checkpoint(evil, model=model, optimizer=opt, scheduler=sched)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    # a checkpoint of the earlier format (numpy's RNG state as an array) still loads
    old = {**ckpt.rng_state(), "numpy": np.random.get_state()}
    torch.save({"scheduler": sched.state_dict(), "rng": old}, evil / "trainer_state.pt")
    assert verify_checkpoint(evil) is None
    ckpt.load_checkpoint(evil, model=model, optimizer=opt, scheduler=sched)


def test_weights_only_save(tmp_path, capsys):
    model, opt, sched = tiny(torch.bfloat16)
    train_steps(model, opt, sched)
    full = save(tmp_path / "full", 2, model, opt, sched)
    light = save(tmp_path / "light", 2, model, opt, sched, save_optimizer=False)
    assert not (light / "state").exists() and verify_checkpoint(light) is None
    # bf16 weights (2 B/param) vs + fp32 master, exp_avg, exp_avg_sq (12 B/param)
    assert dir_bytes(light) < dir_bytes(full) / 4
    model2, opt2, sched2 = tiny(torch.bfloat16, seed=4)
    ckpt.load_checkpoint(light, model=model2, optimizer=opt2, scheduler=sched2)
    assert all(torch.equal(v, params(model)[k]) for k, v in params(model2).items())
    assert "holds no optimizer state (checkpoint.save_optimizer=false)" in capsys.readouterr().out
    assert not opt2.state  # AdamW restarts


def test_no_room_is_one_line_before_writing(tmp_path, monkeypatch):
    model, opt, sched = tiny()
    need = tensor_bytes(model.state_dict()) + tensor_bytes(opt.state_dict()["state"])
    monkeypatch.setattr(
        ckpt.check_space.__globals__["shutil"],
        "disk_usage",
        lambda p: type("U", (), {"free": 1 << 20})(),
    )
    with pytest.raises(ConfigError, match=r"needs 0\.\d GiB .* but 0\.0 GiB are free") as e:
        save(tmp_path, 1, model, opt, sched)
    assert "checkpoint.save_optimizer=false" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "checkpoints" / "step-000001.tmp").exists() and need > 0


def test_peak_disk_use_of_a_save_is_keep_last_checkpoints(tmp_path):
    """Measured: the bytes under the run directory at the moment a save has written everything and not yet
    renamed or pruned (its peak), for keep_last=2: the one old checkpoint kept plus the new one."""
    model, opt, sched = tiny()
    train_steps(model, opt, sched, 1)
    peaks = []
    for step in (1, 2, 3, 4):
        path = save(
            tmp_path,
            step,
            model,
            opt,
            sched,
            before_rename=lambda _: peaks.append(dir_bytes(tmp_path)),
        )
    size = dir_bytes(path)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000003", "step-000004"]
    assert (
        max(peaks) <= 2 * size * 1.02
    )  # never a third checkpoint, nor a second copy of the new one
    assert (
        peaks[-1] >= 2 * size * 0.98 - 4096
    )  # the old one is still there while the new one is written
