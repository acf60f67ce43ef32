"""KL estimators and KL-coefficient controllers against hand-computed values and exact expectations."""

import math

import pytest
import torch

from aha.algos.kl import AdaptiveKLController, FixedKLController, kl, kl_controller


def test_kl_is_the_module_and_the_estimator_keeps_a_name():
    # issue 17, item 15: the package's __init__ must not shadow the module with the function
    import types

    import aha.algos

    assert isinstance(aha.algos.kl, types.ModuleType)
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(aha.algos.kl.kl(logp, ref, "k1"), torch.tensor([[0.5, -1.0]]))
    assert aha.algos.kl_estimate is aha.algos.kl.kl


def test_kl_hand_values():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])  # logp - ref = [0.5, -1.0]
    torch.testing.assert_close(kl(logp, ref, "k1"), torch.tensor([[0.5, -1.0]]))
    torch.testing.assert_close(kl(logp, ref, "k2"), torch.tensor([[0.125, 0.5]]))
    # k3 with x = ref - logp = [-0.5, 1]: exp(-0.5) + 0.5 - 1 = 0.106531, e - 1 - 1 = 0.718282
    torch.testing.assert_close(
        kl(logp, ref, "k3"), torch.tensor([[0.106531, 0.718282]]), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(kl(logp, ref), kl(logp, ref, "k3"))  # k3 is the default (GRPO)
    assert (kl(logp, logp, "k3") == 0).all()


def test_k1_k3_are_unbiased_exactly():
    # Expectation under pi over the whole vocabulary: sum_x pi(x) k(x) must equal the true KL for k1 and k3.
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    ref = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    true_kl = (logp.exp() * (logp - ref)).sum()
    for kind in ("k1", "k3"):
        est = (logp.exp() * kl(logp[None], ref[None], kind)[0]).sum()
        torch.testing.assert_close(est, true_kl)
    assert (logp.exp() * kl(logp[None], ref[None], "k2")[0]).sum() > 0


def test_kl_gradient_and_errors():
    logp = torch.tensor([[-1.0]], requires_grad=True)
    kl(logp, torch.tensor([[-2.0]]), "k3").sum().backward()
    # d/dlogp [exp(ref - logp) - (ref - logp) - 1] = -exp(ref - logp) + 1 = 1 - e^-1
    torch.testing.assert_close(logp.grad, torch.tensor([[1 - math.exp(-1)]]))
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl(logp, logp, "k4")
    with pytest.raises(ValueError, match="shape"):
        kl(torch.zeros(2, 3), torch.zeros(2, 2))


def test_fixed_controller():
    c = FixedKLController(0.05)
    assert c.update(100.0, 256) == 0.05 and c.value == 0.05
    with pytest.raises(ValueError):
        FixedKLController(-1.0)


def test_adaptive_controller_hand_values():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # KL 12: error 12/6 - 1 = 1 -> clipped to 0.2; beta * (1 + 0.2 * 256 / 10000) = 0.1 * 1.00512
    assert c.update(12.0, 256) == pytest.approx(0.100512)
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert c.update(3.0, 256) == pytest.approx(
        0.1 * (1 - 0.2 * 0.0256)
    )  # error -0.5 -> clipped -0.2
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert c.update(6.6, 1000) == pytest.approx(0.1 * 1.01)  # error 0.1, unclipped
    assert c.value == pytest.approx(0.101)


def test_kl_controller_factory():
    assert isinstance(kl_controller("fixed", 0.1), FixedKLController)
    assert isinstance(kl_controller("adaptive", 0.1, target=6.0), AdaptiveKLController)
    with pytest.raises(ValueError, match="target"):
        kl_controller("adaptive", 0.1)
    with pytest.raises(ValueError, match="fixed, adaptive"):
        kl_controller("pid", 0.1)
