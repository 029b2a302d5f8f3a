"""Known answers of the sample-quality metrics."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.quality import coverage, fid, kid, precision_recall


def test_fid_and_kid_of_a_set_against_itself_are_zero():
    """(The unbiased KID of a set against itself is −O(1/n): the cross term keeps the i = i
    pairs the within terms leave out.)"""
    x = np.random.default_rng(0).normal(size=(2000, 8))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)
    assert kid(x, x) == pytest.approx(0.0, abs=0.01)
    assert abs(kid(x, x)) < 0.01 * kid(x, x + 1.0)


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
