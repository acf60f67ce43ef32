"""Loss aggregation, PPO-clip / dual-clip / GSPO policy losses and the clipped value loss, by hand."""

import math

import pytest
import torch

from aha.algos.losses import (
    AGGS,
    agg_denominator,
    agg_loss,
    get_policy_loss,
    gspo_loss,
    policy_loss,
    value_loss,
)

NAN = float("nan")


def close(a, b, tol=1e-6):
    torch.testing.assert_close(
        torch.as_tensor(a, dtype=torch.float64),
        torch.as_tensor(b, dtype=torch.float64),
        rtol=tol,
        atol=tol,
    )


# ---------------------------------------------------------------- agg_loss
def test_agg_modes_by_hand():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(agg_loss(v, m, "token-mean"), 7 / 3)  # (1 + 2 + 4) / 3
    close(agg_loss(v, m, "seq-mean-token-mean"), 2.75)  # (1.5 + 4) / 2
    close(agg_loss(v, m, "seq-mean-token-sum-norm", 4), 0.875)  # 7 / (2 * 4)


def test_agg_empty_sequences_do_not_nan():
    v = torch.tensor([[1.0, 2.0, NAN], [NAN, NAN, NAN]], requires_grad=True)
    m = torch.tensor([[1, 1, 0], [0, 0, 0]])
    close(agg_loss(v, m, "token-mean"), 1.5)
    close(agg_loss(v, m, "seq-mean-token-mean"), 1.5)  # the empty row does not dilute
    close(
        agg_loss(v, m, "seq-mean-token-sum-norm", 4), 0.375
    )  # 3 / (2 * 4): constant normaliser counts all rows
    agg_loss(v, m, "seq-mean-token-mean").backward()
    close(v.grad, [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    for agg in AGGS:  # nothing valid at all -> 0 and a finite (zero) gradient
        w = torch.ones(2, 3, requires_grad=True)
        out = agg_loss(w, torch.zeros(2, 3), agg, norm_len=3)
        out.backward()
        assert out.item() == 0.0 and (w.grad == 0).all()


def test_agg_errors():
    v, m = torch.ones(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="needs norm_len"):
        agg_loss(v, m, "seq-mean-token-sum-norm")
    with pytest.raises(
        ValueError, match="token-mean, seq-mean-token-mean, seq-mean-token-sum-norm"
    ):
        agg_loss(v, m, "sum")
    with pytest.raises(ValueError, match="mask shape"):
        agg_loss(v, torch.ones(2, 2), "token-mean")


@pytest.mark.parametrize("agg", AGGS)
def test_agg_denom_makes_microbatches_sum_to_full_batch(agg):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 5, generator=g, dtype=torch.float64)
    m = torch.rand(6, 5, generator=g) < 0.6
    m[2] = False
    full = agg_loss(v, m, agg, norm_len=5)
    denom = agg_denominator(m, agg)
    parts = sum(
        agg_loss(v[i : i + 2], m[i : i + 2], agg, norm_len=5, denom=denom) for i in range(0, 6, 2)
    )
    close(parts, full, tol=1e-12)


# ---------------------------------------------------------------- policy loss
def one_token_losses(ratios, advs, **kw):
    """Per-token loss values and d loss / d logp for single-token rows (token-mean over B rows, times B)."""
    logp = torch.tensor([[math.log(r)] for r in ratios], dtype=torch.float64, requires_grad=True)
    old = torch.zeros_like(logp)
    a = torch.tensor(advs, dtype=torch.float64)
    B = len(ratios)
    out = [
        policy_loss(
            logp[i : i + 1], old[i : i + 1], a[i : i + 1], torch.ones(1, 1), agg="token-mean", **kw
        )[0]
        for i in range(B)
    ]
    grads = [
        torch.autograd.grad(o, logp, retain_graph=True)[0][i, 0].item() for i, o in enumerate(out)
    ]
    return [o.item() for o in out], grads


def test_policy_loss_clip_by_hand():
    # clip 0.2/0.2.  L = -min(r A, clip(r, .8, 1.2) A); grad -A r where the unclipped term is chosen, else 0
    losses, grads = one_token_losses([1.5, 0.5, 0.5, 1.5, 1.1], [1.0, 1.0, -1.0, -1.0, 2.0])
    close(losses, [-1.2, -0.5, 0.8, 1.5, -2.2])
    close(grads, [0.0, -0.5, 0.0, 1.5, -2.2])


def test_policy_loss_clip_higher_and_dual_clip_by_hand():
    losses, _ = one_token_losses([1.25, 1.3], [1.0, 1.0], clip_high=0.28)
    close(losses, [-1.25, -1.28])
    # dual clip c = 3, A = -1: r = 4 -> max(4, 1.2) = 4 -> min(4, 3) = 3 (grad 0); r = 2 -> 2; A > 0 untouched
    losses, grads = one_token_losses([4.0, 2.0, 4.0, 0.5], [-1.0, -1.0, 1.0, -1.0], clip_c=3.0)
    close(losses, [3.0, 2.0, -1.2, 0.8])
    close(grads, [0.0, 2.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="clip_c"):
        one_token_losses([1.0], [1.0], clip_c=0.5)


def test_policy_loss_metrics_and_aggs():
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.5], [4.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    loss, met = policy_loss(
        ratios.log(), torch.zeros(2, 4, dtype=torch.float64), adv, m, clip_c=3.0
    )
    # per token: [-1.2, -0.5, 0.8, 1.5] and [3.0]; seq-mean-token-mean = (0.6 / 4 + 3.0) / 2
    close(loss, (0.6 / 4 + 3.0) / 2)
    close(met["clip_frac_high"], 1 / 5)
    close(met["clip_frac_low"], 1 / 5)
    close(met["clip_frac_dual"], 1 / 5)
    kl = sum(r - 1 - math.log(r) for r in [1.5, 0.5, 0.5, 1.5, 4.0]) / 5
    close(met["approx_kl"], kl)
    assert all(not v.requires_grad for v in met.values())
    tok, _ = policy_loss(
        ratios.log(), torch.zeros(2, 4, dtype=torch.float64), adv, m, clip_c=3.0, agg="token-mean"
    )
    close(tok, 3.6 / 5)
    dr, _ = policy_loss(
        ratios.log(),
        torch.zeros(2, 4, dtype=torch.float64),
        adv,
        m,
        clip_c=3.0,
        agg="seq-mean-token-sum-norm",
        norm_len=8,
    )
    close(dr, 3.6 / 16)


def test_policy_loss_sequence_advantages_broadcast_and_padding():
    g = torch.Generator().manual_seed(1)
    logp = (-torch.rand(3, 5, generator=g)).requires_grad_()
    old = logp.detach() + 0.1 * torch.randn(3, 5, generator=g)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    a = torch.tensor([0.5, -1.0, 2.0])
    l1, _ = policy_loss(logp, old, a, m)
    l2, _ = policy_loss(logp, old, a[:, None].expand(3, 5), m)
    close(l1, l2)
    # garbage (-inf / nan) in padded positions changes nothing and gives a finite gradient
    bad_logp = torch.where(m.bool(), logp, torch.tensor(-math.inf))
    bad_old = torch.where(m.bool(), old, torch.tensor(NAN))
    l3, met = policy_loss(bad_logp, bad_old, a, m)
    close(l3, l1)
    (g3,) = torch.autograd.grad(l3, logp)
    assert torch.isfinite(g3).all() and (g3[~m.bool()] == 0).all()
    assert all(torch.isfinite(v) for v in met.values())
    with pytest.raises(ValueError, match="advantages shape"):
        policy_loss(logp, old, torch.zeros(4), m)


@pytest.mark.parametrize("agg", AGGS)
def test_policy_loss_gradcheck(agg):
    g = torch.Generator().manual_seed(2)
    old = -torch.rand(3, 4, generator=g, dtype=torch.float64)
    # ratios spread over [0.6, 1.5] so some tokens clip (clip 0.2/0.28, dual 1.3); kinks have measure zero
    logp = (
        old + torch.empty(3, 4, dtype=torch.float64).uniform_(-0.5, 0.4, generator=g)
    ).requires_grad_()
    adv = torch.randn(3, 4, generator=g, dtype=torch.float64)
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    fn = lambda lp: policy_loss(lp, old, adv, m, clip_high=0.28, clip_c=1.3, agg=agg, norm_len=4)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logp,))


def test_gspo_by_hand():
    # row log-ratios [0.1, 0.3] -> sequence ratio exp(0.2) = 1.221403 for both tokens
    logp = torch.tensor([[0.1, 0.3]], dtype=torch.float64, requires_grad=True)
    old, m, a = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2), torch.tensor([1.0])
    loss, _ = gspo_loss(logp, old, a, m, clip_low=0.5, clip_high=0.5)
    close(loss, -math.exp(0.2))
    (grad,) = torch.autograd.grad(loss, logp)
    close(grad, [[-math.exp(0.2) / 2] * 2])  # d(-A exp(mean log r)) / d logp_t = -A s / |o|
    loss, _ = gspo_loss(logp, old, a, m)  # paper clip (3e-4, 4e-4): clipped at 1.0004, no gradient
    close(loss, -1.0004)
    assert get_policy_loss("gspo") is gspo_loss


def test_policy_loss_registry():
    assert get_policy_loss("ppo_clip") is policy_loss
    with pytest.raises(ValueError, match="unknown policy loss 'ppo'.*ppo_clip"):
        get_policy_loss("ppo")
    with pytest.raises(ValueError, match="valid: token-mean"):
        policy_loss(
            torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), agg="mean"
        )


# ---------------------------------------------------------------- value loss
def test_value_loss_by_hand():
    values = torch.tensor([[1.0, 2.0, 7.0]], requires_grad=True)
    old = torch.tensor([[0.5, 2.1, 0.0]])
    returns = torch.tensor([[2.0, 3.0, 0.0]])
    m = torch.tensor([[1, 1, 0]])
    # token 0: err (1-2)^2 = 1; v_clip = .5 + .2 = .7, (.7-2)^2 = 1.69 -> 0.5 * 1.69 = .845 (clipped is larger)
    # token 1: err (2-3)^2 = 1; v_clip = 2.1 - .1 = 2.0 -> equal -> .5
    loss, met = value_loss(values, old, returns, m, clip=0.2)
    close(loss, (0.845 + 0.5) / 2)
    close(met["value_clip_frac"], 0.5)
    (grad,) = torch.autograd.grad(loss, values)
    close(
        grad, [[0.0, -0.5, 0.0]]
    )  # token 0: clipped branch has no grad; token 1: (2-3) / 2 tokens
    loss, _ = value_loss(values, old, returns, m, clip=None)
    close(loss, 0.5)


def test_value_clip_frac_counts_moves_beyond_clip():
    # Fresh random values, 1 in 4 tokens moved beyond the clip: the fraction is exactly those tokens, not
    # tokens whose v_clip differs from v by rounding (issue 17, item 14; float64 reference on the CPU).
    g = torch.Generator().manual_seed(0)
    old = torch.randn(64, 256, generator=g) * 100
    far = torch.rand(64, 256, generator=g) < 0.25
    step = torch.rand(64, 256, generator=g) * 0.19 + torch.where(far, 0.21, 0.0)
    values = old + step * torch.where(torch.rand(64, 256, generator=g) < 0.5, -1.0, 1.0)
    returns = torch.randn(64, 256, generator=g) * 100
    m = torch.rand(64, 256, generator=g) < 0.9
    _, met = value_loss(values, old, returns, m, clip=0.2)
    moved = (values.double() - old.double()).abs() > 0.2
    close(met["value_clip_frac"], (moved & m).sum().item() / m.sum().item())
    _, met = value_loss(values, old, returns, m, clip=0.5)
    assert met["value_clip_frac"].item() == 0.0  # nothing moved more than 0.5


def test_explained_variance():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0, 99.0]])
    m = torch.tensor([[1, 1, 1, 1, 0]])
    ev = lambda v: value_loss(torch.tensor([v]), torch.tensor([v]), r, m)[1]["explained_variance"]  # noqa: E731
    close(ev([1.0, 2.0, 3.0, 4.0, 0.0]), 1.0)
    close(ev([0.0, 1.0, 2.0, 3.0, 0.0]), 1.0)  # a constant offset is explained
    close(ev([2.5, 2.5, 2.5, 2.5, 0.0]), 0.0)  # the mean explains nothing
    close(ev([1.0, 1.0, 3.0, 3.0, 0.0]), 0.8)  # residual var (1/3) / var(R) (5/3) = 0.2


# ---------------------------------------------------------------- rollout correction (importance sampling)
def _is_reference(logp, sampler, mask, mode, c_min, c_max):
    """Loop over rows and tokens in float64: the weight each valid token gets."""
    B, T = logp.shape
    w = torch.zeros(B, T, dtype=torch.float64)
    lo = 0.0 if c_min is None else c_min
    hi = math.inf if c_max is None else c_max
    for i in range(B):
        ratios = {}
        for t in range(T):
            if mask[i, t]:
                s = float(sampler[i, t])
                ratios[t] = 1.0 if math.isnan(s) else math.exp(float(logp[i, t]) - s)
        if mode.startswith("sequence"):
            r = math.prod(ratios.values())
            ratios = dict.fromkeys(ratios, r)
        for t, r in ratios.items():
            if mode.endswith("truncate"):
                w[i, t] = min(max(r, lo), hi)
            else:
                w[i, t] = r if lo <= r <= hi else 0.0
    return w


@pytest.mark.parametrize(
    "mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
)
@pytest.mark.parametrize("bounds", [(None, 3.0), (0.5, 2.0), (None, None)])
def test_rollout_is_weights_against_a_loop(mode, bounds):
    from aha.algos.losses import rollout_is_weights

    g = torch.Generator().manual_seed(hash((mode, bounds)) % 2**31)
    B, T = 5, 7
    logp = -torch.rand(B, T, generator=g) * 3
    sampler = logp + torch.randn(B, T, generator=g) * 0.6
    sampler[1, 2] = NAN  # not reported by the engine: ratio 1
    sampler[3, 5] = -math.inf  # padding garbage, masked below
    mask = (torch.rand(B, T, generator=g) < 0.8).float()
    mask[3, 5] = 0.0
    mask[4] = 0.0  # an empty row
    c_min, c_max = bounds
    w, m = rollout_is_weights(logp, sampler, mask, mode, c_min=c_min, c_max=c_max)
    ref = _is_reference(logp.double(), sampler.double(), mask.bool(), mode, c_min, c_max)
    got = w.expand(B, T).double() * mask.double()
    close(got, ref, tol=1e-5)
    valid = mask.bool()
    close(m["is_weight_mean"], ref[valid].mean(), tol=1e-5)
    assert 0.0 <= float(m["is_cut_frac"]) <= 1.0
    if bounds == (None, None):
        assert float(m["is_cut_frac"]) == 0.0


def test_rollout_is_weights_scale_the_policy_loss_per_token():
    from aha.algos.losses import rollout_is_weights

    g = torch.Generator().manual_seed(3)
    B, T = 4, 6
    logp = (-torch.rand(B, T, generator=g) * 2).requires_grad_()
    sampler = logp.detach() + torch.randn(B, T, generator=g) * 0.5
    adv = torch.randn(B, generator=g)
    mask = torch.ones(B, T)
    mask[0, 4:] = 0
    w, _ = rollout_is_weights(logp, sampler, mask, "token_truncate", c_max=2.0)
    for loss_fn in (policy_loss, gspo_loss):
        for agg in AGGS:
            got, _ = loss_fn(logp, logp.detach(), adv, mask, agg=agg, norm_len=T, is_weight=w)
            # on-policy the clipped term is -A per token: weighted by hand, then aggregated
            ref = agg_loss(-adv[:, None].expand(B, T) * w, mask, agg, norm_len=T)
            close(got, ref)
            # the weight is a constant: d/dlogp of -A * w * ratio
            (gw,) = torch.autograd.grad(got, logp)
            plain, _ = loss_fn(logp, logp.detach(), adv, mask, agg=agg, norm_len=T)
            (gp,) = torch.autograd.grad(plain, logp)
            if loss_fn is policy_loss:
                close(gw, gp * w)
    off, metrics = rollout_is_weights(logp, sampler, mask, "off")
    assert off is None and metrics == {}
    with pytest.raises(ValueError, match="unknown rollout correction"):
        rollout_is_weights(logp, sampler, mask, "token")
    with pytest.raises(ValueError, match="c_min < c_max"):
        rollout_is_weights(logp, sampler, mask, "token_mask", c_min=2.0, c_max=1.0)


def test_rollout_is_sequence_weight_of_a_long_sequence_stays_finite():
    from aha.algos.losses import rollout_is_weights

    logp = torch.zeros(2, 4000)
    sampler = torch.full((2, 4000), -0.1)  # log-ratio 400 per sequence: e^400 overflows fp32
    mask = torch.ones(2, 4000)
    w, m = rollout_is_weights(logp, sampler, mask, "sequence_truncate", c_max=3.0)
    close(w, torch.full((2, 1), 3.0))
    w, m = rollout_is_weights(logp, sampler, mask, "sequence_mask", c_max=3.0)
    assert (w == 0).all() and float(m["is_cut_frac"]) == 1.0
    w, m = rollout_is_weights(logp, sampler, mask, "sequence_mask", c_max=None)
    assert torch.isfinite(w).all()
