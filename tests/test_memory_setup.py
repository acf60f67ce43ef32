"""The memory plan at the start of training: a no-op on the CPU unless memory.max_memory_gib is set; a config
that cannot fit stops with one line (exit 2) before any weight is loaded; with a limit the plan resolves the
null keys (here: turns checkpointing on), prints its table, and a GRPO step runs with memory/* metrics."""

import importlib.util

import pytest
import torch

from aha.cli import main
from aha.config import ConfigError, load_config
from aha.train.config import TrainConfig
from aha.train.memory import GIB, activation_bytes, engine_parts, static_parts
from aha.train.memory_plan import EFFICIENT_TOKENS, HEADROOM
from aha.train.memory_setup import model_shape, plan_memory, run_spec

BASE = [
    "model.path=tiny-random",
    "task.name=arithmetic",
    "sampling.group_size=4",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=8",
    "sampling.max_new_tokens=12",
    "logging.progress=false",
    "logging.samples_every=0",
    "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
    "rewards.num_workers=1",
    "checkpoint.save_every=0",
]


def test_cpu_without_a_limit_is_a_no_op():
    said = []
    cfg = load_config(TrainConfig, None, BASE)
    assert cfg.model.gradient_checkpointing is None and cfg.batch.micro_batch_tokens is None
    assert plan_memory(cfg, 1, torch.device("cpu"), said.append) is None and not said
    assert (cfg.model.gradient_checkpointing, cfg.batch.micro_batch_tokens, cfg.engine_release) == (
        False, 0, False,
    )  # fmt: skip
    cfg = load_config(
        TrainConfig, None, BASE + ["model.gradient_checkpointing=true", "engine_release=true"]
    )
    plan_memory(cfg, 1, torch.device("cpu"), said.append)
    assert (
        cfg.model.gradient_checkpointing is True and cfg.engine_release is True
    )  # the user's keys


def test_cannot_fit_is_one_line_before_loading_weights(tmp_path, monkeypatch, capsys):
    import aha.models.load as load  # the trainers load through aha.schema.ModelConfig.load

    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    code = main(["train", *BASE, f"out={tmp_path}", "memory.max_memory_gib=0.0001"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("aha train: config error at 'memory': this run needs at least ")
    assert "but the plan may use 0.0 GiB (90% of 0.0 GiB, memory.max_memory_gib)" in err
    assert "lower it with optim.name=adamw_8bit (or adamw_cpu_offload), model.lora.r=16" in err
    assert err.endswith("memory.max_memory_gib")


def test_the_users_keys_are_named_when_they_block_the_fit(tmp_path, monkeypatch, capsys):
    import aha.models.load as load  # the trainers load through aha.schema.ModelConfig.load

    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    extra = ["model.gradient_checkpointing=false", "engine_release=false", "algorithm.beta=0.1"]
    assert main(["train", *BASE, *extra, f"out={tmp_path}", "memory.max_memory_gib=0.0001"]) == 2
    err = capsys.readouterr().err
    for key in ("model.gradient_checkpointing=true", "engine_release=true", "algorithm.beta=0"):
        assert key in err


def test_plan_turns_checkpointing_on_and_the_step_runs(tmp_path, capsys):
    from aha.train.grpo import GRPOTrainer

    cfg = load_config(TrainConfig, None, BASE + [f"out={tmp_path}", "model.device=cpu"])
    shape = model_shape("tiny-random")
    run = run_spec(
        cfg, 1, 4, None
    )  # fp32 on the CPU (on a GPU machine too: the sizes are the CPU's)
    st, (kv, _, engine) = static_parts(shape, run), engine_parts(shape, run)
    eff = min(run.micro_batch_size * run.seq_tokens, EFFICIENT_TOKENS)
    without = st.static + engine + kv + activation_bytes(shape, run, eff, False)
    with_ckpt = st.static + engine + kv + activation_bytes(shape, run, eff, True)
    limit = (without + with_ckpt) / 2 / HEADROOM  # fits with checkpointing only
    cfg.memory.max_memory_gib = limit / GIB
    tr = GRPOTrainer(cfg)
    try:
        assert tr.memory is not None and cfg.model.gradient_checkpointing is True
        assert cfg.batch.micro_batch_tokens == tr.memory.micro_batch_tokens >= eff
        assert tr.model.is_gradient_checkpointing
        out = capsys.readouterr().out
        assert "memory plan:" in out and "chosen: model.gradient_checkpointing=true" in out
        m = tr.train_step(1)
    finally:
        tr.close()
    assert m["memory/total_gib"] * GIB <= HEADROOM * limit
    assert m["memory/limit_gib"] == pytest.approx(limit / GIB, rel=1e-6)
    assert m["memory/activations_gib"] > 0 and m["grad_norm"] > 0


def test_optimizer_checks(monkeypatch):
    cfg = load_config(TrainConfig, None, BASE + ["optim.name=adamw_cpu_offload"])
    with pytest.raises(ConfigError, match="adamw_cpu_offload runs in one process"):
        plan_memory(cfg, 2, torch.device("cpu"), print)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torchao" else real(n, *a)
    )
    with pytest.raises(
        ConfigError, match=r"optim.name.*adamw_8bit needs torchao: pip install 'aha-rl\[optim\]'"
    ):
        load_config(TrainConfig, None, ["optim.name=adamw_8bit"])
    with pytest.raises(ConfigError, match="choose one of: adamw, adamw_8bit, adamw_cpu_offload"):
        load_config(TrainConfig, None, ["optim.name=sgd"])


def test_shape_of_a_built_in_model_reads_its_config_only():
    from transformers import AutoModelForCausalLM

    from aha.models.load import BUILTIN

    shape = model_shape("tiny-base")
    model = AutoModelForCausalLM.from_pretrained(str(BUILTIN["tiny-base"]))
    assert shape.params == sum(p.numel() for p in model.parameters())


def test_max_memory_gib_caps_this_process_on_a_gpu(monkeypatch):
    """On a GPU, memory.max_memory_gib is also torch's per-process cap (a run that outgrows it stops itself, not a
    neighbour): the fraction of the device's total, at most 1. Nothing is capped on the CPU or without the key."""
    from types import SimpleNamespace

    import aha.train.memory_setup as ms

    calls = []
    fake_props = lambda dev: SimpleNamespace(total_memory=80 * GIB)
    monkeypatch.setattr(ms.torch.cuda, "get_device_properties", fake_props)

    def fraction(
        f, d
    ):  # torch refuses a device without an index (ValueError on the H200, torch 2.11)
        assert d.index is not None, f"set_per_process_memory_fraction got {d}"
        calls.append((f, d))

    monkeypatch.setattr(ms.torch.cuda, "set_per_process_memory_fraction", fraction)
    monkeypatch.setattr(ms.torch.cuda, "current_device", lambda: 0)
    gpu = torch.device("cuda", 0)
    assert ms.cap_memory(torch.device("cuda"), 20.0) == 0.25 and calls == [(0.25, gpu)]
    assert ms.cap_memory(gpu, 200.0) == 1.0  # more than the device: no cap beyond the device
    assert ms.cap_memory(gpu, None) is None and ms.cap_memory(torch.device("cpu"), 20.0) is None
    assert len(calls) == 2
    # the trainer's close: the whole device again (a pipeline's next stage sets its own)
    ms.uncap_memory(torch.device("cuda"))
    assert calls[-1] == (1.0, gpu)


def test_size_engine_passes_the_kv_budget_and_the_packing_choice():
    from types import SimpleNamespace

    from aha.train.memory import Breakdown
    from aha.train.memory_plan import Plan
    from aha.train.memory_setup import size_engine

    for packed in (0, 123):
        eng = SimpleNamespace(kv_cache_bytes=None, pack_weights=None)
        size_engine(eng, Plan(True, 4096, False, 777, Breakdown(packed=packed), limit=1))
        assert eng.kv_cache_bytes == 777 and eng.pack_weights is bool(packed)
    eng = SimpleNamespace(kv_cache_bytes=None, pack_weights=None)
    size_engine(eng, None)  # no plan (memory.plan=off): the engine's own defaults
    assert eng.kv_cache_bytes is None and eng.pack_weights is None


def test_memory_metrics_report_the_allocated_and_reserved_peaks_and_reset_them(monkeypatch):
    """On a GPU a step's memory/* carry torch's allocated and reserved peaks since the last step (torch.cuda
    stubbed: this machine has no GPU)."""
    from aha.train.memory_setup import memory_metrics

    calls = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 3 * GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d: 4.5 * GIB)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(d))
    m = memory_metrics(None, torch.device("cuda", 0))
    assert m == {"memory/peak_gib": 3.0, "memory/reserved_peak_gib": 4.5}
    assert calls == [torch.device("cuda", 0)]
    assert memory_metrics(None, torch.device("cpu")) == {}
