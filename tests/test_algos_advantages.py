"""Advantage estimators against hand-computed numbers and slow Python-loop references."""

import math

import numpy as np
import pytest
import torch

from aha.algos.advantages import (
    ADVANTAGES,
    gae,
    get_advantage,
    grpo,
    reinforce_pp,
    rloo,
    token_level_rewards,
    zero_std_groups,
)
from aha.algos.masked import masked_whiten

NAN = float("nan")


def close(a, b, tol=1e-5):
    torch.testing.assert_close(
        torch.as_tensor(a, dtype=torch.float64),
        torch.as_tensor(b, dtype=torch.float64),
        rtol=tol,
        atol=tol,
    )


# ---------------------------------------------------------------- GRPO
def test_grpo_two_groups_of_two():
    # group [1, 0]: mean 0.5, unbiased std sqrt(0.5) = 0.70711 -> +-0.5 / (0.70711 + 1e-6) = +-0.707106
    adv, metrics = grpo(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
    s = 0.5 / (math.sqrt(0.5) + 1e-6)
    close(adv, [s, -s, -s, s])
    assert abs(s - 0.707106) < 1e-6
    close(metrics["frac_reward_zero_std"], 0.0)


def test_grpo_group_of_four():
    # [1, 0, 0, 0]: mean .25, squares .5625 + 3 * .0625 = .75, var .75/3 = .25, std .5
    adv, _ = grpo([1.0, 0.0, 0.0, 0.0], 4)
    close(adv, [0.75 / 0.500001, -0.25 / 0.500001, -0.25 / 0.500001, -0.25 / 0.500001])
    close(adv, [1.499997, -0.499999, -0.499999, -0.499999])


def test_grpo_batch_and_none_scaling():
    r = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    centered = [0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75]
    # batch: mean .5, squares 8 * .25 = 2, var 2/7, std 0.534522
    adv, _ = grpo(r, 4, std_scale="batch")
    close(adv, [c / (math.sqrt(2 / 7) + 1e-6) for c in centered])
    close(adv[0], 1.403120)
    adv, _ = grpo(r, 4, std_scale="none")
    close(adv, centered)
    close(get_advantage("dr_grpo")(r, 4)[0], centered)


def test_grpo_equal_groups_are_exact_zeros():
    # 0.1 in float32: a float mean could be off by an ulp, and ulp / 1e-6 is not small. Must be exactly 0.
    r = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 1.0, 0.0, 0.2], dtype=torch.float32)
    for scale in ("group", "batch", "none"):
        adv, m = grpo(r, 3, std_scale=scale)
        assert torch.equal(adv[:6], torch.zeros(6))
        assert (adv[6:] != 0).all()
    close(m["frac_reward_zero_std"], 2 / 3)
    assert zero_std_groups(r, 3).tolist() == [True, True, False]


def test_grpo_nan_rewards_are_left_out():
    # group [1, nan, 0, 0]: valid [1, 0, 0], mean 1/3, var (4/9 + 1/9 + 1/9) / 2 = 1/3, std 0.57735
    adv, m = grpo([1.0, NAN, 0.0, 0.0, NAN, NAN, NAN, NAN, NAN, 5.0, NAN, NAN], 4)
    s = math.sqrt(1 / 3) + 1e-6
    close(adv[:4], [(2 / 3) / s, 0.0, (-1 / 3) / s, (-1 / 3) / s])
    close(adv[4:], [0.0] * 8)  # all-NaN group and single-valid group -> 0
    assert torch.isfinite(adv).all()
    close(m["frac_reward_nan"], 8 / 12)
    close(m["frac_reward_zero_std"], 2 / 3)
    # batch std also ignores NaN: valid [1, 0, 0, 5]
    adv_b, _ = grpo([1.0, NAN, 0.0, 0.0, NAN, NAN, NAN, 5.0], 4, std_scale="batch")
    bstd = float(np.std([1, 0, 0, 5], ddof=1)) + 1e-6
    close(adv_b, [(2 / 3) / bstd, 0, (-1 / 3) / bstd, (-1 / 3) / bstd, 0, 0, 0, 0])


def test_grpo_dtypes_and_errors():
    assert grpo(torch.tensor([1.0, 0.0], dtype=torch.float64), 2)[0].dtype == torch.float64
    assert grpo(np.array([1.0, 0.0]), 2)[0].dtype == torch.float32
    assert grpo([1, 0], 2)[0].dtype == torch.float32
    with pytest.raises(ValueError, match="groups of 3"):
        grpo([1.0, 0.0, 1.0, 0.0], 3)
    with pytest.raises(ValueError, match="group, batch, none"):
        grpo([1.0, 0.0], 2, std_scale="bogus")


def random_rewards(groups: int, G: int, seed: int, low=-1.0) -> torch.Tensor:
    """(groups * G,) float64 in (low, 1), one NaN in some groups, every group >= 2 distinct valid rewards."""
    gen = torch.Generator().manual_seed(seed)
    r = low + torch.rand(groups, G, generator=gen, dtype=torch.float64) * (1 - low)
    r[::2, 0] = NAN
    return r.reshape(-1)


def plain_grpo(r, G, std_scale="group", eps=1e-6):
    """The textbook formula (the code before the overflow guard): sums and squares taken as they are."""
    g = r.view(-1, G)
    valid = ~torch.isnan(g)
    n = valid.sum(1)
    c = torch.where(valid, g - (torch.where(valid, g, 0.0).sum(1) / n)[:, None], 0.0)
    if std_scale == "none":
        return c.reshape(-1)
    if std_scale == "group":
        return (c / (((c**2).sum(1) / (n - 1)).sqrt()[:, None] + eps)).reshape(-1)
    v = ~torch.isnan(r)
    cb = torch.where(v, r - torch.where(v, r, 0.0).sum() / v.sum(), 0.0)
    return c.reshape(-1) / (((cb**2).sum() / (v.sum() - 1)).sqrt() + eps)


@pytest.mark.parametrize("std_scale", ["group", "batch", "none"])
def test_ordinary_rewards_are_bit_for_bit_the_plain_formula(std_scale):
    for seed in range(3):
        r = random_rewards(6, 4, seed) * 10.0 ** (3 * seed)
        assert torch.equal(grpo(r, 4, std_scale=std_scale)[0], plain_grpo(r, 4, std_scale))


@pytest.mark.parametrize("std_scale", ["group", "batch", "none"])
def test_huge_rewards_give_finite_exact_statistics(std_scale):
    """Issue 17, item 2: rewards near 1e308 (sums and squares overflow float64) scale exactly: the statistics
    of r * 2^k are those of r times 2^k (r in (0.7, 1), k = 1023: each reward < 9e307, float64's largest is
    1.8e308, and any three of them sum past it)."""
    k = 2.0**1023
    for seed in range(3):
        r = random_rewards(6, 4, seed, low=0.7)
        big = r * k
        adv = grpo(big, 4, std_scale=std_scale)[0]
        assert not torch.equal(plain_grpo(big, 4, std_scale), adv)  # NaN or 0: what it was
        if std_scale == "none":
            assert torch.equal(adv, grpo(r, 4, std_scale="none")[0] * k)
        else:  # eps is below the huge std's precision: compare with eps = 0
            assert torch.equal(adv, grpo(r, 4, std_scale=std_scale, eps=0.0)[0])
        assert torch.equal(rloo(big, 4)[0], rloo(r, 4)[0] * k)
        assert torch.equal(reinforce_pp(big)[0], reinforce_pp(r, eps=0.0)[0])


# ---------------------------------------------------------------- RLOO
def _rloo_loop(r, G):
    out = []
    for g in range(0, len(r), G):
        grp = r[g : g + G]
        for i, x in enumerate(grp):
            others = [y for j, y in enumerate(grp) if j != i and not math.isnan(y)]
            out.append(0.0 if math.isnan(x) or not others else x - sum(others) / len(others))
    return out


def test_rloo_hand_values():
    close(rloo([1.0, 0.0, 0.0, 0.0], 4)[0], [1.0, -1 / 3, -1 / 3, -1 / 3])
    close(rloo([1.0, 2.0, 3.0], 3)[0], [-1.5, 0.0, 1.5])  # 1 - 2.5, 2 - 2, 3 - 1.5
    close(rloo([1.0, NAN, 0.0, 3.0], 4)[0], [-0.5, 0.0, -2.0, 2.5])  # others of 1: {0, 3}


def test_rloo_matches_loop_on_random_rewards():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(40, generator=g, dtype=torch.float64)
    r[torch.rand(40, generator=g) < 0.2] = NAN
    close(rloo(r, 5)[0], _rloo_loop(r.tolist(), 5), tol=1e-10)


# ---------------------------------------------------------------- REINFORCE++
def test_reinforce_pp_scalar_is_batch_whitened():
    # [1, 0, 0, 1]: mean .5, unbiased std sqrt(1/3) = 0.57735 -> +-0.866025
    adv, m = reinforce_pp([1.0, 0.0, 0.0, 1.0])
    close(adv, [0.866025, -0.866025, -0.866025, 0.866025])
    close(m["return_mean"], 0.5)
    adv, _ = reinforce_pp([1.0, NAN, 0.0, 1.0])  # valid [1, 0, 1]: mean 2/3, std 0.57735
    close(adv, [0.57735, 0.0, -1.154700, 0.57735])


def test_reinforce_pp_token_level():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    # gamma = 1: every valid token's return is the score; tokens [1, 1, 1, 0, 0]: mean .6, var 1.2/4 = .3
    adv, _ = reinforce_pp(torch.tensor([1.0, 0.0]), mask=mask)
    a, b = 0.4 / (math.sqrt(0.3) + 1e-6), -0.6 / (math.sqrt(0.3) + 1e-6)
    close(adv, [[a, a, a, 0], [b, b, 0, 0]])
    close(a, 0.730296)
    # gamma = 0.5 on token rewards [[0, 0, 1]]: returns [0.25, 0.5, 1]; check pre-whitening stats
    _, m = reinforce_pp(torch.tensor([[0.0, 0.0, 1.0]]), mask=torch.ones(1, 3), gamma=0.5)
    close(m["return_mean"], 1.75 / 3)


def test_reinforce_pp_token_level_matches_loop():
    g = torch.Generator().manual_seed(5)
    r = torch.randn(4, 7, generator=g, dtype=torch.float64)
    m = torch.rand(4, 7, generator=g) < 0.7
    m[0] = False
    adv, _ = reinforce_pp(r, mask=m, gamma=0.9)
    rets, flat = [[0.0] * 7 for _ in range(4)], []
    for b in range(4):  # returns-to-go over the valid tokens of each row
        acc = 0.0
        for t in reversed([t for t in range(7) if m[b, t]]):
            acc = r[b, t].item() + 0.9 * acc
            rets[b][t] = acc
            flat.append(acc)
    mean, std = float(np.mean(flat)), float(np.std(flat, ddof=1))
    ref = [
        [(rets[b][t] - mean) / (std + 1e-6) if m[b, t] else 0.0 for t in range(7)] for b in range(4)
    ]
    close(adv, ref, tol=1e-10)


def test_reinforce_pp_baseline():
    # group-centered [.75, -.25, -.25, -.25, .25, .25, .25, -.75]: mean 0, squares 1.5, var 1.5/7
    adv, _ = get_advantage("reinforce++_baseline")([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0], 4)
    s = math.sqrt(1.5 / 7) + 1e-6
    close(adv, [c / s for c in [0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75]])


def test_token_level_rewards():
    mask = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [1.0, 1.0, 1.0]])
    out = token_level_rewards(torch.tensor([2.0, 3.0, 9.0]), mask, kl=kl, kl_coef=0.5)
    close(out, [[-0.05, 2.0 - 0.1, 0.0], [0.0, -0.25, 3.0 - 0.3], [0.0, 0.0, 0.0]])
    # the input's floating dtype is kept (issue 17, item 15); ints and lists give float32
    out64 = token_level_rewards(torch.tensor([2.0, 3.0, 9.0], dtype=torch.float64), mask, kl=kl)
    assert out64.dtype == torch.float64
    assert token_level_rewards(torch.tensor([2, 3, 9]), mask).dtype == torch.float32
    assert token_level_rewards([2.0, float("nan"), 9.0], mask).dtype == torch.float32


# ---------------------------------------------------------------- GAE
def _gae_loop_ref(r, v, m, gamma, lam):
    """Per row, on the valid tokens only, in plain Python floats."""
    B, T = len(r), len(r[0])
    adv = [[0.0] * T for _ in range(B)]
    ret = [[0.0] * T for _ in range(B)]
    for b in range(B):
        idx = [t for t in range(T) if m[b][t]]
        a = 0.0
        for k in reversed(range(len(idx))):
            t = idx[k]
            v_next = v[b][idx[k + 1]] if k + 1 < len(idx) else 0.0
            delta = r[b][t] + gamma * v_next - v[b][t]
            a = delta + gamma * lam * a
            adv[b][t] = a
            ret[b][t] = a + v[b][t]
    return adv, ret


def test_gae_hand_values():
    r, v, m = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3)
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    close(adv, [[0.5, 0.4, 0.3]])  # Monte Carlo return 1 minus V
    close(ret, [[1.0, 1.0, 1.0]])
    # gamma .9, lam .8: deltas .04, .03, .3 -> A2 = .3, A1 = .03 + .72*.3 = .246, A0 = .04 + .72*.246 = .21712
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.8)
    close(adv, [[0.21712, 0.246, 0.3]])
    close(ret, [[0.71712, 0.846, 1.0]])


@pytest.mark.parametrize("layout", ["right", "left", "holes"])
def test_gae_matches_loop_on_ragged_masks(layout):
    g = torch.Generator().manual_seed({"right": 1, "left": 2, "holes": 3}[layout])
    B, T = 6, 11
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0], lengths[1] = 0, T  # an empty row and a full row
    ar = torch.arange(T)[None]
    if layout == "right":
        m = ar < lengths[:, None]
    elif layout == "left":
        m = ar >= (T - lengths)[:, None]
    else:
        m = torch.rand(B, T, generator=g) < 0.6
    r_pad = torch.where(m, r, torch.full_like(r, 1e6))  # padding values must not matter
    adv, ret = gae(r_pad, v, m, gamma=0.97, lam=0.9)
    ref_adv, ref_ret = _gae_loop_ref(r.tolist(), v.tolist(), m.tolist(), 0.97, 0.9)
    close(adv, ref_adv, tol=1e-10)
    close(ret, ref_ret, tol=1e-10)


def test_gae_whiten_and_float32():
    g = torch.Generator().manual_seed(4)
    r, v = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    raw, ret = gae(r, v, m, gamma=1.0, lam=0.95)
    w, ret_w = gae(r, v, m, gamma=1.0, lam=0.95, whiten=True)
    assert raw.dtype == torch.float32
    close(ret_w, ret)  # returns use the raw advantages
    close(w, masked_whiten(raw, m))
    valid = w[m.bool()].double()
    close(valid.mean(), 0.0)
    close(valid.std(), 1.0, tol=1e-4)
    assert (w[~m.bool()] == 0).all()
    with pytest.raises(ValueError, match="one shape"):
        gae(r, v[:, :4], m, gamma=1.0, lam=1.0)


def test_masked_whiten_hand():
    # valid [1, 2, 3]: mean 2, unbiased var 1
    out = masked_whiten(
        torch.tensor([[1.0, 2.0, 99.0], [3.0, NAN, NAN]]),
        torch.tensor([[1, 1, 0], [1, 0, 0]]),
        eps=0.0,
    )
    close(out, [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])


# ---------------------------------------------------------------- registry
def test_advantage_registry():
    assert {"grpo", "dr_grpo", "rloo", "reinforce++", "gae"} <= set(ADVANTAGES)
    assert get_advantage("grpo") is grpo and get_advantage("gae") is gae
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*grpo, dr_grpo, rloo"):
        get_advantage("ppo")


# ---------------------------------------------------------------- std_scale, every outcome estimator
def slow_std(values: list[float]) -> float:
    """Unbiased std of the non-NaN values (0 for fewer than 2)."""
    v = [x for x in values if not math.isnan(x)]
    if len(v) < 2:
        return 0.0
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def slow_rloo(r: list[float], G: int, scale: str, eps: float = 1e-6) -> list[float]:
    out = []
    for g in range(0, len(r), G):
        grp = r[g : g + G]
        valid = [x for x in grp if not math.isnan(x)]
        std = {"group": slow_std(grp), "batch": slow_std(r), "none": None}[scale]
        for x in grp:
            if math.isnan(x) or len(valid) < 2 or max(valid) == min(valid):
                out.append(0.0)
                continue
            a = x - (sum(valid) - x) / (len(valid) - 1)  # minus the mean of the others
            out.append(a if std is None else a / (std + eps))
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_rloo_std_scale_matches_a_loop(scale):
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        r = torch.randint(0, 4, (24,), generator=g).double() / 3
        r[torch.rand(24, generator=g) < 0.15] = NAN
        adv, _ = rloo(r, 6, std_scale=scale)
        close(adv, slow_rloo(r.tolist(), 6, scale))


def test_reinforce_pp_std_scale_none_only_centres():
    r = [1.0, NAN, 0.0, 3.0, 2.0]
    mean = (1 + 0 + 3 + 2) / 4
    adv, m = reinforce_pp(r, std_scale="none")
    close(adv, [1 - mean, 0.0, 0 - mean, 3 - mean, 2 - mean])
    close(reinforce_pp(r)[0], [(x - mean) / (slow_std(r) + 1e-6) if x == x else 0 for x in r])


def test_std_scale_each_estimator_accepts():
    from aha.algos.advantages import STD_SCALES_OF, remax

    assert set(STD_SCALES_OF) == set(ADVANTAGES) - {"gae"}  # every outcome estimator states its own
    with pytest.raises(ValueError, match="remax takes std_scale none"):
        remax([1.0, 0.0], 2, baseline=[0.5], std_scale="group")
    with pytest.raises(ValueError, match="reinforce\\+\\+ takes std_scale batch or none"):
        reinforce_pp([1.0, 0.0], 2, std_scale="group")
    for (
        name,
        scales,
    ) in STD_SCALES_OF.items():  # the registry's callables take every scale they list
        fn = get_advantage(name)
        for s in scales:
            kw = {"baseline": [0.5, 0.5]} if name == "remax" else {}
            adv, _ = fn([1.0, 0.0, 0.0, 1.0], 2, std_scale=s, **kw)
            assert adv.shape == (4,)
