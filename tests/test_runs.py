"""Runs that never lose or poison data (issue 17, items 2-5): the non-finite guard (a NaN step is skipped,
K in a row stop the run, a NaN state is never saved), resume past a torn metrics line or without a checkpoint,
out= that refuses a second run, and the exit codes of a stopped run."""

import copy
import json
import math
import os
import re
import signal

import pytest
import torch

from aha.cli import main
from aha.config import ConfigError, load_config
from aha.train import sft as sft_module
from aha.train.grpo import GRPOTrainer
from aha.train.optim import build_scheduler
from aha.train.ppo import PPOTrainer
from aha.train.sft import SFTTrainer
from aha.train.sft_config import SFTConfig
from aha.train.update import clip_and_step
from test_sft import cfg as sft_cfg
from test_train_e2e import BASE
from test_train_e2e import cfg as rl_cfg


def read_rows(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def metrics(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def fit(trainer):
    try:
        return trainer.fit()
    finally:
        trainer.close()


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def never_stepped(optimizer) -> bool:
    """AdamW's moments are absent, or zero as a checkpoint save initialises them (one step on zero gradients
    at lr 0: torch.distributed.checkpoint's _init_optim_state)."""
    moments = [v for s in optimizer.state.values() for k, v in s.items() if k != "step"]
    return not any(bool(v.any()) for v in moments)


def saved_finite(ckpt) -> bool:
    from safetensors.torch import load_file

    return all(
        bool(torch.isfinite(t).all()) for t in load_file(ckpt / "model.safetensors").values()
    )


# ---- item 2: the non-finite guard -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "loss"])
def test_clip_and_step_skips_a_non_finite_step(bad):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    ref = copy.deepcopy(model)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, ref)]
    scheds = [
        build_scheduler(o, total=10, warmup=3, schedule="cosine", min_ratio=0.1) for o in opts
    ]
    x = torch.randn(5, 8)
    for _ in range(2):  # a finite step equals the plain clip + AdamW step (and fills AdamW's state)
        for m, o in zip((model, ref), opts):
            o.zero_grad()
            m(x).pow(2).mean().backward()
        norm, stepped = clip_and_step(model, opts[0], scheds[0], max_norm=0.5)
        ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        opts[1].step()
        scheds[1].step()
        assert stepped and torch.equal(norm, ref_norm)
        assert_same(snapshot(model), snapshot(ref))
    weights, state = snapshot(model), copy.deepcopy(opts[0].state_dict())
    lr = scheds[0].get_last_lr()
    model(x).pow(2).mean().backward()
    if bad != "loss":
        next(model.parameters()).grad[0, 0] = bad
    norm, stepped = clip_and_step(model, opts[0], scheds[0], max_norm=0.5, ok=bad != "loss")
    assert not stepped and (bad == "loss" or not torch.isfinite(norm))
    assert_same(snapshot(model), weights)
    after = opts[0].state_dict()["state"]
    assert all(torch.equal(after[i][k], state["state"][i][k]) for i in after for k in after[i])
    assert scheds[0].get_last_lr() == lr and all(p.grad is None for p in model.parameters())


HUGE = "rewards.funcs=[{name: 'reward_fixtures:huge_half'}]"


def test_huge_rewards_train_on_exact_group_statistics(tmp_path):
    """The attack: a finite reward of 1e308 for half of each group overflowed the group statistics, made every
    weight NaN, crashed the next step and saved the NaN model. GRPO's advantages are now exact (+-0.866)."""
    trainer = GRPOTrainer(rl_cfg(tmp_path, "steps=2", "optim.lr=1e-3", HUGE))
    before = snapshot(trainer.model)
    assert fit(trainer)["exit_code"] == 0
    assert [(r["skipped_steps"], math.isfinite(r["loss"])) for r in metrics(tmp_path)] == [
        (0, True),
        (0, True),
    ]
    after = snapshot(trainer.model)
    assert not all(torch.equal(after[k], before[k]) for k in before)
    assert saved_finite(tmp_path / "checkpoints" / "step-000002")


def test_non_finite_advantages_skip_the_step_and_stop_the_run(tmp_path, capsys):
    """Dr. GRPO does not divide by the std: +-5e307 overflows float32. Skipped, weights untouched, stopped."""
    trainer = GRPOTrainer(rl_cfg(tmp_path, "steps=6", "algorithm.advantage=dr_grpo", HUGE))
    before = snapshot(trainer.model)
    summary = fit(trainer)
    assert (summary["stopped"], summary["exit_code"], summary["steps"]) == ("skipped", 1, 3)
    assert_same(snapshot(trainer.model), before)
    assert never_stepped(trainer.optimizer)
    assert [(r["skipped_steps"], r.get("loss")) for r in metrics(tmp_path)] == [
        (1, None),
        (2, None),
        (3, None),
    ]
    out = capsys.readouterr().out
    assert "step 1 skipped: non-finite advantages" in out and "stopped at step 3/6" in out
    last = tmp_path / "checkpoints" / "step-000003"
    assert (
        saved_finite(last) and json.loads((last / "state.json").read_text())["skipped_steps"] == 3
    )


def test_ppo_skips_both_updates(tmp_path):
    trainer = PPOTrainer(
        rl_cfg(
            tmp_path,
            "steps=3",
            "algorithm.name=ppo",
            "optim.max_skipped_steps=1",
            HUGE,
        )
    )
    before, critic = snapshot(trainer.model), snapshot(trainer.critic.value)
    summary = fit(trainer)
    assert (summary["stopped"], summary["exit_code"], summary["steps"]) == ("skipped", 1, 1)
    assert_same(snapshot(trainer.model), before)
    assert_same(snapshot(trainer.critic.value), critic)
    assert never_stepped(trainer.optimizer) and never_stepped(trainer.critic.optimizer)


def nan_loss_at(monkeypatch, trainer, steps):
    """Make the SFT loss NaN at `steps` (the forward's logprobs times NaN), leaving the weights alone."""
    real, step_of = sft_module.packed_logprobs, trainer.train_step
    now = {"step": 0}

    def logprobs(model, batch, **kw):
        logp = real(model, batch, **kw)
        return logp * float("nan") if now["step"] in steps else logp

    def train_step(step):
        now["step"] = step
        return step_of(step)

    monkeypatch.setattr(sft_module, "packed_logprobs", logprobs)
    trainer.train_step = train_step


def test_sft_skips_nan_steps_and_goes_on(tmp_path, monkeypatch, capsys):
    trainer = SFTTrainer(sft_cfg(tmp_path, "steps=5", "optim.lr=1e-2"))
    nan_loss_at(monkeypatch, trainer, {2, 3})
    weights, step = {}, trainer.train_step

    def record(k):
        out = step(k)
        weights[k] = snapshot(trainer.model)
        return out

    trainer.train_step = record
    summary = fit(trainer)
    assert summary["exit_code"] == 0 and summary["steps"] == 5 and not summary["stopped_early"]
    rows = metrics(tmp_path / "run")
    assert [r["skipped_steps"] for r in rows] == [0, 1, 2, 2, 2]
    assert rows[1]["loss"] is None and rows[3]["loss"] is not None
    assert_same(weights[3], weights[1])  # the two NaN steps changed nothing
    assert not all(torch.equal(weights[4][k], weights[3][k]) for k in weights[3])
    assert "step 2 skipped: non-finite loss" in capsys.readouterr().out
    state = json.loads(
        (tmp_path / "run" / "checkpoints" / "step-000005" / "state.json").read_text()
    )
    assert state["skipped_steps"] == 2


def test_sft_blown_up_by_a_huge_lr_stops(tmp_path):
    """lr 1e30: step 1 leaves finite weights around 1e30 whose activations overflow: NaN loss from step 2."""
    summary = fit(
        SFTTrainer(sft_cfg(tmp_path, "steps=8", "optim.lr=1e30", "optim.max_grad_norm=0"))
    )
    assert (summary["stopped"], summary["exit_code"], summary["steps"]) == ("skipped", 1, 4)
    assert [r["skipped_steps"] for r in metrics(tmp_path / "run")] == [0, 1, 2, 3]
    assert saved_finite(tmp_path / "run" / "checkpoints" / "step-000004")


def test_a_non_finite_state_is_never_saved(tmp_path, capsys):
    trainer = SFTTrainer(sft_cfg(tmp_path, "steps=4", "checkpoint.save_every=1"))
    step = trainer.train_step

    def poison(k):  # a NaN the guard cannot see (not from a gradient): the save must catch it
        out = step(k)
        if k == 2:
            with torch.no_grad():
                next(trainer.model.parameters())[0, 0] = float("nan")
        return out

    trainer.train_step = poison
    summary = fit(trainer)
    assert (summary["stopped"], summary["exit_code"], summary["steps"]) == ("non-finite", 1, 2)
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert saved == ["step-000001"] and saved_finite(tmp_path / "run" / "checkpoints" / saved[0])
    assert (
        "not saving step 2: the weights or optimizer state hold NaN/inf" in capsys.readouterr().out
    )


# ---- item 3 (b), (c): resume ---------------------------------------------------------------------------------
def test_read_jsonl_drops_only_a_torn_last_line(tmp_path):
    from aha.train.run_dir import read_jsonl

    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo\xc3')  # torn mid-character
    lines = []
    assert read_jsonl(p, lines.append) == [{"step": 1}, {"step": 2}]
    assert lines == [f"{p}:4: dropped a torn last line (the run stopped while writing it)"]
    for bad in (b'{"step": 1\n{"step": 2}\n', b'[1]\n{"step": 2}\n', b'{"step": 1}\n\xff\n{}\n'):
        p.write_bytes(bad)
        line = 2 if bad.startswith(b'{"step": 1}') else 1
        with pytest.raises(ConfigError, match=re.escape(f"{p}:{line} is not a JSON row")):
            read_jsonl(p)


def test_resume_past_a_torn_metrics_line(tmp_path, capsys):
    fit(SFTTrainer(sft_cfg(tmp_path, "steps=3")))
    with (tmp_path / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss": 0.1')  # a full disk cut the line
    fit(SFTTrainer(sft_cfg(tmp_path, "steps=5", "resume=true")))
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3, 4, 5]
    assert "dropped a torn last line" in capsys.readouterr().out


def test_resume_without_a_checkpoint_starts_the_logs_afresh(tmp_path):
    import shutil

    fit(SFTTrainer(sft_cfg(tmp_path, "steps=2")))
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # e.g. killed before its first save
    fit(SFTTrainer(sft_cfg(tmp_path, "steps=3", "resume=true")))
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3]  # not 1, 2, 1, 2, 3


def test_resume_cuts_samples_too(tmp_path):
    """RL: samples.jsonl is cut with metrics.jsonl (here: resumed without a checkpoint, from step 0)."""
    fit(GRPOTrainer(rl_cfg(tmp_path, "steps=3", "logging.samples_every=1")))
    steps = lambda name: [r["step"] for r in read_rows(tmp_path / name)]  # noqa: E731
    assert steps("samples.jsonl") == [1, 1, 2, 2, 3, 3]
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")
    fit(GRPOTrainer(rl_cfg(tmp_path, "steps=2", "logging.samples_every=1", "resume=true")))
    assert steps("samples.jsonl") == [1, 1, 2, 2] and steps("metrics.jsonl") == [1, 2]


# ---- item 4: a second run into out= -------------------------------------------------------------------------
def test_a_second_run_into_out_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    fit(
        SFTTrainer(
            sft_cfg(tmp_path, "steps=3", "checkpoint.save_every=1", "checkpoint.keep_last=5")
        )
    )
    from aha.schema import ModelConfig

    real_load = ModelConfig.load
    monkeypatch.setattr(ModelConfig, "load", lambda *a, **k: pytest.fail("model loaded"))
    capsys.readouterr()
    with pytest.raises(ConfigError, match="already holds a run.*resume=true.*overwrite=true"):
        SFTTrainer(sft_cfg(tmp_path, "steps=1"))
    args = [
        "model.path=tiny-random",
        f"data.path={tmp_path / 'data.jsonl'}",
        f"out={tmp_path / 'run'}",
    ]
    assert main(["sft", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err
    with pytest.raises(ConfigError, match="choose one"):
        load_config(SFTConfig, None, [*args, "resume=true", "overwrite=true"])
    monkeypatch.setattr(ModelConfig, "load", real_load)
    (tmp_path / "run" / "samples.jsonl").write_text('{"step": 3}\n')
    (tmp_path / "run" / "tensorboard").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")  # not a run's file: kept
    fit(SFTTrainer(sft_cfg(tmp_path, "steps=1", "overwrite=true")))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-000001"]
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1]
    assert not (tmp_path / "run" / "samples.jsonl").exists()
    assert (
        not (tmp_path / "run" / "tensorboard").exists()
        and (tmp_path / "run" / "notes.txt").exists()
    )


def test_rl_refuses_a_second_run_too(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ConfigError, match="already holds a run"):
        GRPOTrainer(rl_cfg(tmp_path, "steps=1"))


# ---- item 5: exit codes ---------------------------------------------------------------------------------------
def signal_at(monkeypatch, cls, step, *signums):
    real = cls.train_step

    def train_step(self, k):
        if k == step:
            for s in signums:
                os.kill(os.getpid(), s)
        return real(self, k)

    monkeypatch.setattr(cls, "train_step", train_step)


def test_sigterm_exits_143_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    signal_at(monkeypatch, GRPOTrainer, 2, signal.SIGTERM)
    assert main(["train", *BASE, "steps=50", f"out={tmp_path}"]) == 143
    out = capsys.readouterr().out
    assert "stopped at step 2/50 by SIGTERM; resume with resume=true" in out and "done:" not in out
    assert (tmp_path / "checkpoints" / "step-000002").is_dir()


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_exits_130(tmp_path, monkeypatch, capsys, presses):
    """One Ctrl-C finishes the step; a second stops at once (the last complete step is saved)."""
    signal_at(monkeypatch, SFTTrainer, 2, *[signal.SIGINT] * presses)
    args = ["model.path=tiny-random", f"data.path={sft_cfg(tmp_path).data.path[0]}"]
    args += [f"out={tmp_path / 'run'}", "steps=50", "logging.progress=false", "batch.batch_size=2"]
    assert main(["sft", *args]) == 130
    done = 3 - presses  # the second press interrupts step 2 before it completes
    assert f"stopped at step {done}/50 by SIGINT" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoints" / f"step-{done:06d}").is_dir()


def test_pipeline_passes_the_exit_code_on(tmp_path, monkeypatch):
    import aha.train

    stopped = {"steps": 1, "stopped_early": True, "stopped": "SIGTERM", "exit_code": 143}
    monkeypatch.setattr(aha.train, "train", lambda cfg: stopped)
    args = [
        "r1-zero",
        "model=tiny-random",
        f"out={tmp_path}",
        "eval.limit=0",
        "task.name=arithmetic",
    ]
    assert main(["pipeline", *args]) == 143


class Quantized(torch.Tensor):
    """A stand-in for torchao's OptimState8bit: a wrapper subclass of int8 codes and float scales that runs
    no torch operation at all (torchao's has no amax/amin: the 7B save with optim.name=adamw_8bit raised)."""

    @staticmethod
    def __new__(cls, codes, scale):
        t = torch.Tensor._make_wrapper_subclass(cls, codes.shape, dtype=torch.float32)
        t.codes, t.scale = codes, scale
        return t

    def __tensor_flatten__(self):
        return ["codes", "scale"], None

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise NotImplementedError(f"Quantized: {func}")


def test_finite_check_reads_quantized_optimizer_state():
    from types import SimpleNamespace

    from aha.train.dist import Dist
    from aha.train.guard import state_is_finite

    module = torch.nn.Linear(4, 3)
    state = Quantized(torch.zeros(12, dtype=torch.int8), torch.ones(2))
    opt = SimpleNamespace(state={module.weight: {"exp_avg": state, "step": torch.tensor(1.0)}})
    assert state_is_finite([(module, opt)], Dist())
    state.scale[1] = float("nan")  # a NaN scale makes its whole block NaN
    assert not state_is_finite([(module, opt)], Dist())
