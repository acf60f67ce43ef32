"""AdamWMaster equals torch's AdamW run in fp32, while the live bf16 weights carry the rounded values;
the schedule by hand."""

import math

import pytest
import torch

from aha.train.optim import AdamWMaster, build_optimizer, lr_lambda


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
