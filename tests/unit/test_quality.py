"""Known answers of the sample-quality metrics."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.training.quality import coverage, fid, kid, precision_recall


def test_fid_and_kid_of_a_set_against_itself_are_zero():
    """(The unbiased KID of a set against itself is −O(1/n): the cross term keeps the i = i
    pairs the within terms leave out.)"""
    x = np.random.default_rng(0).normal(size=(2000, 8))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)
    assert kid(x, x) == pytest.approx(0.0, abs=10.0)  # × 10³
    assert abs(kid(x, x)) < 0.01 * kid(x, x + 1.0)


def _cubic(a: np.ndarray, b: np.ndarray) -> float:
    return (float(a @ b) / len(a) + 1.0) ** 3


def _mmd2_by_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² written out pair by pair (Gretton et al. 2012, eq. 3)."""
    m, n = len(x), len(y)
    xx = sum(_cubic(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(_cubic(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(_cubic(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def test_kid_is_a_thousand_times_the_unbiased_mmd2_of_the_cubic_kernel():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(5, 3)), rng.normal(size=(6, 3)) + 0.3
    assert kid(real, fake) == pytest.approx(1000.0 * _mmd2_by_pairs(real, fake), rel=1e-12)


def test_kid_of_two_points_each_by_hand():
    """d = 1, k(x, y) = (xy + 1)³; real {0, 1}, fake {1, 2}: within real k(0, 1) = 1, within
    fake k(1, 2) = 27, across (1 + 1 + 8 + 27) / 4 = 9.25, so MMD² = 1 + 27 − 2 · 9.25 = 9.5."""
    assert kid(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])) == pytest.approx(9500.0, rel=1e-12)


def test_kid_in_one_dimension_from_power_sums():
    """In 1-d, (xy + 1)³ = Σ_j C(3, j) x^j y^j, so every sum over pairs is a product of power
    sums S_j = Σ x^j: Σ_{i≠i'} (x_i x_i')^j = S_j² − S_2j."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=300), rng.uniform(-1.0, 2.0, size=400)
    m, n = len(x), len(y)
    mmd2 = 0.0
    for j, c in enumerate((1, 3, 3, 1)):
        sx, sy = np.sum(x ** j), np.sum(y ** j)
        mmd2 += c * ((sx ** 2 - np.sum(x ** (2 * j))) / (m * (m - 1))
                     + (sy ** 2 - np.sum(y ** (2 * j))) / (n * (n - 1)) - 2.0 * sx * sy / (m * n))
    assert kid(x[:, None], y[:, None]) == pytest.approx(1000.0 * mmd2, rel=1e-9)


def test_kid_of_two_samples_of_one_distribution_is_near_zero():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    assert abs(kid(a, b)) < 0.05 * kid(a, b + 0.5)


def test_fid_between_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(1)
    delta = np.full(8, 0.5)  # ‖δ‖² = 2
    a, b = rng.normal(size=(20_000, 8)), rng.normal(size=(20_000, 8)) + delta
    assert fid(a, b) == pytest.approx(float(delta @ delta), rel=0.05)


def test_kid_grows_with_the_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(400, 8))
    near, far = rng.normal(size=(400, 8)) + 0.2, rng.normal(size=(400, 8)) + 1.0
    assert 0 < kid(a, near) < kid(a, far)


def test_precision_and_recall_on_identical_and_disjoint_blobs():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 4)), rng.normal(size=(400, 4))
    p, r = precision_recall(a, b)
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(a, b + 50.0)
    assert p == 0.0 and r == 0.0
    p, r = precision_recall(a, 0.05 * b)  # collapsed to the middle: precise, no recall
    assert p > 0.9 and r < 0.2


def test_a_collapsed_generator_covers_one_class():
    assert coverage(np.full(100, 7), 10) == pytest.approx(0.1)
    assert coverage(np.arange(100) % 10, 10) == 1.0
