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


def _probe(x, y, evaluations, mask=None):
    x = torch.as_tensor(x, dtype=torch.float32)
    mask = torch.ones(x.shape[0], x.shape[-1]) if mask is None else mask
    return M.probe_accuracies(x, mask, y, [(torch.as_tensor(f, dtype=torch.float32), t) for f, t in evaluations])


def test_probe_accuracy_separable_and_nan_cases():
    rng = np.random.default_rng(0)
    y = np.repeat([3, 7], 50)  # any label values
    x = (y[:, None] == 7) * 4.0 + rng.normal(size=(100, 2))
    acc = _probe(np.stack([x, x * np.nan]), y, [(np.stack([x, x]), y), (np.stack([x, x]), None)])
    assert acc[0, 0] > 0.95 and math.isnan(acc[1, 0]), "a member with non-finite codes gets NaN"
    assert torch.isnan(acc[:, 1]).all(), "a split without labels gets NaN"
    assert torch.isnan(_probe(x[None], np.zeros(100, int), [(x[None], y)])).all(), "one class"


def test_probe_is_scikit_learns_logistic_regression_on_standardised_codes():
    """The same objective as LogisticRegression() after StandardScaler() (C = 1, unpenalised
    intercepts): the same class probabilities at convergence, the same accuracies; a member's
    padded latent dimensions change nothing."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    x = rng.normal(size=(300, 3)) + 0.8 * np.eye(4, 3)[y]
    y_eval = rng.integers(0, 4, 200)
    x_eval = rng.normal(size=(200, 3)) + 0.8 * np.eye(4, 3)[y_eval]
    ref = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-10, max_iter=10_000)).fit(x, y)
    z = (x - x.mean(0)) / x.std(0)
    design = torch.as_tensor(np.concatenate([z, np.ones((300, 1))], 1))[None]
    theta = M._fit_softmax(design, torch.as_tensor(y))
    probs = torch.softmax(design @ theta, -1)[0].numpy()
    np.testing.assert_allclose(probs, ref.predict_proba(x), atol=1e-6)
    # member 0: the three codes; member 1: its first two codes, padded with a zero dimension
    codes = np.stack([x, np.concatenate([x[:, :2], np.zeros((300, 1))], 1)])
    evals = np.stack([x_eval, np.concatenate([x_eval[:, :2], np.zeros((200, 1))], 1)])
    acc = _probe(codes, y, [(evals, y_eval)], mask=torch.tensor([[1.0, 1, 1], [1, 1, 0]]))
    two = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-10, max_iter=10_000)).fit(x[:, :2], y)
    assert acc[0, 0].item() == ref.score(x_eval, y_eval)
    assert acc[1, 0].item() == two.score(x_eval[:, :2], y_eval)


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


def test_log_normal_pairs_is_the_summed_log_density_of_every_pair():
    g = torch.Generator().manual_seed(2)
    z, mu = torch.randn(3, 5, 4, generator=g), torch.randn(3, 6, 4, generator=g)
    logvar = torch.randn(3, 6, 4, generator=g) * 3  # σ from ~0.01 to ~100
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]).unsqueeze(1)
    direct = (M.log_normal(z.unsqueeze(2), mu.unsqueeze(1), logvar.unsqueeze(1)) * mask.unsqueeze(1)).sum(-1)
    torch.testing.assert_close(M.log_normal_pairs(z, mu, logvar, mask), direct, rtol=1e-5, atol=1e-4)
