"""AdamWMaster equals torch's AdamW run in fp32, while the live bf16 weights carry the rounded values;
the schedule by hand."""

import math

import pytest
import torch

from aha.train.optim import AdamWMaster, AdamWOffload, build_optimizer, lr_lambda


def test_master_adamw_matches_fp32_adamw():
    torch.manual_seed(0)
    w0 = torch.randn(64, 32).to(torch.bfloat16).float()  # representable in bf16: both start equal
    ref = torch.nn.Parameter(w0.clone())
    live = torch.nn.Parameter(w0.to(torch.bfloat16))
    opt_ref = torch.optim.AdamW([ref], lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    opt = AdamWMaster([live], lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for _ in range(20):
        g = torch.randn(64, 32).to(torch.bfloat16)
        ref.grad, live.grad = g.float(), g
        opt_ref.step()
        opt.step()
    master = opt.state[live]["master"]
    assert torch.allclose(master, ref.detach(), atol=1e-6)
    assert torch.equal(live.detach(), master.to(torch.bfloat16))


def test_tiny_updates_are_not_lost_in_bf16():
    w = torch.nn.Parameter(torch.ones(1000, dtype=torch.bfloat16))
    opt = AdamWMaster([w], lr=1e-6)
    for _ in range(100):
        w.grad = torch.ones_like(w)
        opt.step()
    # 100 steps of ~1e-6 each: invisible to bf16 per step, but accumulated in the master
    assert opt.state[w]["master"][0].item() == pytest.approx(1 - 1e-4, rel=1e-3)
    naive = torch.nn.Parameter(torch.ones(1000, dtype=torch.bfloat16))
    nopt = torch.optim.AdamW([naive], lr=1e-6, weight_decay=0.0)
    for _ in range(100):
        naive.grad = torch.ones_like(naive)
        nopt.step()
    assert naive[0].item() == 1.0  # what a pure-bf16 AdamW does: nothing


def test_build_optimizer_picks_by_dtype():
    fp32 = torch.nn.Linear(4, 4)
    assert type(build_optimizer(fp32, 1e-3, 0.0, (0.9, 0.99), 1e-8)) is torch.optim.AdamW
    bf16 = torch.nn.Linear(4, 4).to(torch.bfloat16)
    assert type(build_optimizer(bf16, 1e-3, 0.0, (0.9, 0.99), 1e-8)) is AdamWMaster


def test_schedule_by_hand():
    kw = dict(total=10, warmup=2, min_ratio=0.1)
    assert [lr_lambda(s, schedule="constant", **kw) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_lambda(2, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_lambda(6, schedule="cosine", **kw) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))
    )
    assert lr_lambda(10, schedule="cosine", **kw) == pytest.approx(0.1)


def test_state_dict_round_trip_keeps_fp32_master():
    w = torch.nn.Parameter(torch.randn(8, dtype=torch.bfloat16))
    opt = AdamWMaster([w], lr=1e-3)
    w.grad = torch.randn(8, dtype=torch.bfloat16)
    opt.step()
    fresh = AdamWMaster([w], lr=1e-3)
    fresh.load_state_dict(opt.state_dict())
    for key in ("master", "exp_avg", "exp_avg_sq"):
        assert fresh.state[w][key].dtype == torch.float32
        assert torch.equal(fresh.state[w][key], opt.state[w][key])


# ---- optim.name: the offloaded and 8-bit layouts ------------------------------------------------------------
def _pair(dtype, seed=0):
    torch.manual_seed(seed)
    w0 = torch.randn(3, 64, 32).to(dtype)
    return [torch.nn.Parameter(w.clone()) for w in w0], [torch.nn.Parameter(w.clone()) for w in w0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_offload_equals_master_adamw(dtype):
    a, b = _pair(dtype)
    ref = AdamWMaster(a, lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    off = AdamWOffload(b, lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for _ in range(10):
        for x, y in zip(a, b):
            x.grad = torch.randn(x.shape).to(dtype)
            y.grad = x.grad.clone()
        ref.step()
        off.step()
    for x, y in zip(a, b):
        st = off.state[y]
        assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in st.values())
        master = ref.state[x].get("master", x.detach())
        # torch's fused kernel orders the bias corrections differently: last-bit differences only
        torch.testing.assert_close(st["master"], master.float(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(st["exp_avg_sq"], ref.state[x]["exp_avg_sq"], rtol=1e-6, atol=0)
        assert torch.equal(
            y.detach(), st["master"].to(dtype)
        )  # the live weight is the rounded master
        assert float((y.detach().float() - master.float()).abs().max()) <= 2**-7 * float(
            master.abs().max()
        )


def test_offload_state_moves_between_optimizers():
    a, b = _pair(torch.bfloat16, seed=1)
    ref = AdamWMaster(a, lr=1e-3)
    for x in a:
        x.grad = torch.randn(x.shape).to(torch.bfloat16)
    ref.step()
    off = AdamWOffload(b, lr=1e-3)
    off.load_state_dict(
        ref.state_dict()
    )  # a checkpoint of optim.name=adamw resumed with the offload
    for x, y in zip(a, b):
        for key in ("master", "exp_avg", "exp_avg_sq", "step"):
            assert (
                off.state[y][key].dtype == torch.float32 and off.state[y][key].device.type == "cpu"
            )
            assert torch.equal(off.state[y][key], ref.state[x][key].float())
    back = AdamWMaster(a, lr=1e-3)
    back.load_state_dict(off.state_dict())
    assert torch.equal(back.state[a[0]]["master"], ref.state[a[0]]["master"])


def test_build_optimizer_by_name(monkeypatch):
    import sys
    import types

    bf16 = torch.nn.Linear(64, 64).to(torch.bfloat16)
    args = (1e-3, 0.01, (0.9, 0.99), 1e-8)
    assert type(build_optimizer(bf16, *args, name="adamw_cpu_offload")) is AdamWOffload
    with pytest.raises(ValueError, match="choose one of: adamw, adamw_8bit, adamw_cpu_offload"):
        build_optimizer(bf16, *args, name="sgd")
    monkeypatch.setitem(sys.modules, "torchao", None)  # not installed
    monkeypatch.setitem(sys.modules, "torchao.optim", None)
    with pytest.raises(RuntimeError, match=r"needs torchao: pip install 'aha-rl\[optim\]'"):
        build_optimizer(bf16, *args, name="adamw_8bit")
    made = []  # the wiring, with a stand-in for torchao's class
    fake = types.SimpleNamespace(AdamW8bit=lambda params, **kw: made.append((params, kw)) or "opt")
    monkeypatch.setitem(sys.modules, "torchao.optim", fake)
    assert build_optimizer(bf16, *args, name="adamw_8bit") == "opt"
    params, kw = made[0]
    assert len(params) == 2 and kw == dict(
        lr=1e-3, weight_decay=0.01, betas=(0.9, 0.99), eps=1e-8, bf16_stochastic_round=True
    )


def test_torchao_adamw8bit_steps_on_cpu(monkeypatch):
    """The real library where it is installed (the GPU machine's wheels; not in the CPU test extra, whose
    transformers would import it everywhere). Its step is torch.compile'd; eager here (compiling takes minutes
    on 2 CPU cores)."""
    ao = pytest.importorskip("torchao.optim")
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: fn)
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 64).to(torch.bfloat16)
    opt = build_optimizer(model, 1e-3, 0.0, (0.9, 0.99), 1e-8, name="adamw_8bit")
    assert isinstance(opt, ao.AdamW8bit) and opt.bf16_stochastic_round
    w0 = model.weight.detach().clone()
    for _ in range(3):
        model(torch.randn(8, 256, dtype=torch.bfloat16)).float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    assert type(opt.state[model.weight]["exp_avg"]).__name__ == "OptimState8bit"
    assert float((model.weight.detach() - w0).abs().max()) > 1e-3


def test_offload_run_resumes_exactly(tmp_path):
    """optim.name=adamw_cpu_offload through the trainer and its checkpoints (torch.distributed.checkpoint): a run
    stopped after step 2 and resumed logs what an uninterrupted one does (bf16 weights: the master matters)."""
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.grpo import GRPOTrainer, train

    base = ["model.path=tiny-random", "task.name=arithmetic", "sampling.group_size=4",
            "batch.prompts_per_step=2", "batch.micro_batch_size=8", "sampling.max_new_tokens=12",
            "logging.progress=false", "logging.samples_every=0", "rewards.num_workers=1",
            "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]", "steps=4", "optim.lr=1e-2",
            "model.dtype=bfloat16", "optim.name=adamw_cpu_offload"]  # fmt: skip
    cfg = lambda out, *extra: load_config(TrainConfig, None, base + [f"out={out}", *extra])
    train(cfg(tmp_path / "full"))
    part = GRPOTrainer(cfg(tmp_path / "part"))
    assert isinstance(part.optimizer, AdamWOffload)
    step = part.train_step
    part.train_step = lambda k: setattr(part, "stop_requested", k == 2) or step(k)
    try:
        assert part.fit()["steps"] == 2
    finally:
        part.close()
    train(cfg(tmp_path / "part", "resume=true"))
    import json

    read = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    full, resumed = read(tmp_path / "full"), read(tmp_path / "part")
    # Step 4 is the first whose metrics depend on the restored state: step 3's update uses the moments (nonzero
    # after a nonzero gradient in steps 1-2) and the fp32 master.
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert max(r["grad_norm"] for r in full[:2]) > 0
    for a, b in zip(full, resumed):
        for key in ("reward/mean", "loss", "grad_norm", "entropy"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)
