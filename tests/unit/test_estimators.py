"""Metric definitions checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ablate.training import estimators as M


def test_kl_of_standard_normal_is_zero_and_known_value():
    assert torch.count_nonzero(M.kl_per_dim(torch.zeros(3), torch.zeros(3))) == 0
    # KL(N(1, e^1) || N(0,1)) = 0.5 (1 + e − 1 − 1)
    assert M.kl_per_dim(torch.tensor(1.0), torch.tensor(1.0)).item() == pytest.approx(0.5 * (math.e - 1))


def test_log_normal_matches_torch_distribution():
    z, mu, lv = torch.tensor([0.3, -1.0]), torch.tensor([0.1, 0.5]), torch.tensor([0.2, -0.7])
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * lv)).log_prob(z)
    torch.testing.assert_close(M.log_normal(z, mu, lv), ref)


def test_log_prior_ratio_is_the_difference_of_the_two_log_densities():
    g = torch.Generator().manual_seed(0)
    mu, lv, eps = (torch.randn(50, 3, generator=g) for _ in range(3))
    z = mu + eps * torch.exp(0.5 * lv)
    torch.testing.assert_close(M.log_prior_ratio(z, eps, lv), M.log_std_normal(z) - M.log_normal(z, mu, lv))


def test_iwae_bound():
    w = torch.log(torch.tensor([[1.0], [3.0]]))  # k=2 weights 1 and 3 → log 2
    assert M.iwae_bound(w, dim=0).item() == pytest.approx(math.log(2.0))


def test_active_units_counts_only_varying_real_dims():
    mu = torch.zeros(1, 50, 3)
    mu[0, :, 0] = torch.linspace(-1, 1, 50)  # varies: active
    mu[0, :, 2] = torch.linspace(-1, 1, 50)  # varies but padded
    assert M.active_units(mu, torch.tensor([[1.0, 1.0, 0.0]])).tolist() == [1]


def test_mutual_information_bounds():
    n = 16
    # Posteriors far apart: z_i identifies x_i, MI reaches log n.
    lq_self = torch.zeros(1, n)
    lq_cross = torch.zeros(1, n)  # logsumexp over j = log q(z_i|x_i) + log(1 + ~0)
    assert M.mutual_information(lq_self, lq_cross, n).item() == pytest.approx(math.log(n))
    # Identical posteriors: cross logsumexp = self + log n → MI 0.
    assert M.mutual_information(lq_self, lq_cross + math.log(n), n).item() == pytest.approx(0.0, abs=1e-6)


def test_dead_fraction():
    lo = torch.tensor([[0.0, 0.0, -1.0, 0.0]])
    hi = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    real = torch.tensor([[True, True, True, False]])
    assert M.dead_fraction(lo, hi, real).item() == pytest.approx(1 / 3)


def test_probe_accuracy_separable_and_nan_cases():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    x = y[:, None] * 4.0 + rng.normal(size=(100, 2))
    assert M.probe_accuracy(x, y, x, y) > 0.95
    assert math.isnan(M.probe_accuracy(x * np.nan, y, x, y))


TRAIN = np.array([[0.0, 1.0, 0.2], [1.0, 1.0, 0.6]], dtype=np.float32)  # pixel means 0.5, 1, 0.4
TEST = np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 1.0]], dtype=np.float32)


def test_trivial_nll_bernoulli_by_hand():
    """p = (0.5, 1 − ε, 0.4). Image 1: log 2 − log ε − log 0.6; image 2 (x = 0.5 scores
    log 2 whatever it is): log 2 − log(1 − ε) − log 0.4."""
    eps = M.TRIVIAL_EPS
    by_hand = (2 * math.log(2) - math.log(eps) - math.log(1 - eps) - math.log(0.6) - math.log(0.4)) / 2
    assert M.trivial_nll(TRAIN, TEST, "bernoulli") == pytest.approx(by_hand, rel=1e-9)


def test_trivial_nll_gaussian_by_hand():
    """Variances 0.25, 0, 0.04 → one σ² = 0.29 / 3; squared distances to the means 1.41 and
    0.36; NLL = ½ (Σ(x − μ)² / σ² + 3 log 2πσ²), averaged."""
    var = 0.29 / 3
    by_hand = 0.5 * ((1.41 + 0.36) / 2 / var + 3 * math.log(2 * math.pi * var))
    assert M.trivial_nll(TRAIN, TEST, "gaussian") == pytest.approx(by_hand, rel=1e-6)
    flat = np.full((2, 3), 0.5)  # no variance at all: σ² = ε
    assert M.trivial_nll(flat, flat, "gaussian") == pytest.approx(1.5 * math.log(2 * math.pi * M.TRIVIAL_EPS))


def test_trivial_nll_of_splits_longer_than_a_chunk_is_the_formula_on_the_whole_arrays():
    rng = np.random.default_rng(0)
    train, test = rng.uniform(size=(M._ROWS + 7, 3)), rng.uniform(size=(M._ROWS * 2 + 1, 3))
    p, var = train.mean(0), train.var(0).mean()
    bernoulli = -(test * np.log(p) + (1 - test) * np.log(1 - p)).sum(1).mean()
    gaussian = 0.5 * (((test - p) ** 2).sum(1) / var + 3 * np.log(2 * np.pi * var)).mean()
    assert M.trivial_nll(train, test, "bernoulli") == pytest.approx(bernoulli, rel=1e-9)
    assert M.trivial_nll(train, test, "gaussian") == pytest.approx(gaussian, rel=1e-9)
