"""Metric definitions checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ablate import estimators as M


def test_kl_of_standard_normal_is_zero_and_known_value():
    assert torch.count_nonzero(M.kl_per_dim(torch.zeros(3), torch.zeros(3))) == 0
    # KL(N(1, e^1) || N(0,1)) = 0.5 (1 + e − 1 − 1)
    assert M.kl_per_dim(torch.tensor(1.0), torch.tensor(1.0)).item() == pytest.approx(0.5 * (math.e - 1))


def test_log_normal_matches_torch_distribution():
    z, mu, lv = torch.tensor([0.3, -1.0]), torch.tensor([0.1, 0.5]), torch.tensor([0.2, -0.7])
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * lv)).log_prob(z)
    torch.testing.assert_close(M.log_normal(z, mu, lv), ref)


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
