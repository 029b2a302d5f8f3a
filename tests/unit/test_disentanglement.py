"""Disentanglement metrics (MIG, SAP, DCI) checked on codes whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ablate.training import disentanglement as D

SIZES = (3, 4, 8, 8, 8)
N = 450


def _factors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)


@pytest.fixture(scope="module")
def cases() -> dict[str, dict[str, float]]:
    """`scores` of four codes for the same factors: the factors themselves (plus noise that
    breaks ties), a random rotation of them, a random linear mix of them, and pure noise."""
    rng = np.random.default_rng(1)
    factors = _factors(N)
    aligned = factors + 1e-3 * rng.standard_normal(factors.shape)
    rotation = np.linalg.qr(rng.standard_normal((len(SIZES), len(SIZES))))[0]
    codes = {"aligned": aligned, "rotated": aligned @ rotation,
             "mixed": aligned @ rng.standard_normal((len(SIZES), len(SIZES))),
             "noise": rng.standard_normal((N, len(SIZES)))}
    return {name: D.scores(c, factors) for name, c in codes.items()}


def test_the_factors_themselves_score_near_one(cases):
    s = cases["aligned"]
    assert set(s) == {*D.DISENTANGLEMENT, "mig_per_factor", "factor_accuracy"}
    assert all(isinstance(s[k], float) for k in D.DISENTANGLEMENT)
    assert s["mig"] > 0.9 and min(s["mig_per_factor"]) > 0.9 and min(s["factor_accuracy"]) > 0.9
    assert len(s["mig_per_factor"]) == len(s["factor_accuracy"]) == len(SIZES)
    assert s["dci_disentanglement"] > 0.9 and s["dci_completeness"] > 0.9
    assert s["dci_informativeness"] > 0.9
    assert s["sap"] > 0.25 and s["sap"] > max(cases[c]["sap"] for c in ("rotated", "mixed", "noise")) + 0.15


@pytest.mark.parametrize("case", ["rotated", "mixed"])
def test_a_rotated_or_mixed_code_scores_lower(cases, case):
    for name in ("mig", "sap", "dci_disentanglement", "dci_completeness"):
        assert cases[case][name] < cases["aligned"][name] - 0.2, name


def test_noise_scores_near_zero(cases):
    s = cases["noise"]
    assert s["mig"] < 0.05 and s["sap"] < 0.05
    assert s["dci_disentanglement"] < 0.1
    assert s["dci_informativeness"] < 0.35  # near chance for 3..8 classes


def test_mutual_information_matches_sklearn_and_entropy_matches_scipy():
    from scipy.stats import entropy
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(2)
    factors = _factors(300, seed=3)
    codes = rng.integers(0, 6, (300, 3)) + (factors[:, :3] > 1)  # dependent on the factors
    m = D.mutual_information(codes, factors)
    assert m.shape == (3, len(SIZES))
    ref = [[mutual_info_score(factors[:, j], codes[:, i]) for j in range(len(SIZES))] for i in range(3)]
    np.testing.assert_allclose(m, ref, rtol=1e-10, atol=1e-12)
    assert m.min() >= 0 and m.max() > 0.05
    h = D.factor_entropy(factors)
    np.testing.assert_allclose(h, [entropy(np.bincount(factors[:, j])) for j in range(len(SIZES))])
    np.testing.assert_allclose(h, [mutual_info_score(factors[:, j], factors[:, j]) for j in range(len(SIZES))])


def test_discretize_uses_equal_width_bins_over_the_range():
    codes = np.stack([np.linspace(0.0, 1.0, 40), np.full(40, 3.0)], axis=1)
    out = D.discretize(codes, bins=20)
    assert out[:, 0].tolist() == np.repeat(np.arange(1, 21), 2).tolist()  # the max is in bin 20
    assert len(np.unique(out[:, 1])) == 1  # a constant column is one bin


def test_mig_is_a_normalised_gap_and_skips_a_constant_factor():
    factors = np.stack([np.repeat([0, 1], 50), np.zeros(100, dtype=int)], axis=1)
    codes = np.stack([factors[:, 0].astype(float), np.zeros(100)], axis=1)
    # code 0 carries all of H(factor 0) = log 2, code 1 none: gap / H = 1; factor 1 is constant
    assert D.mig(codes, factors) == pytest.approx(1.0)
    assert math.isnan(D.mig(codes, factors[:, 1:]))


def test_dci_from_importance_known_matrices():
    assert D.dci_from_importance(np.eye(4)) == pytest.approx((1.0, 1.0))
    assert D.dci_from_importance(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-9)
    # one code explains two factors equally: that code's disentanglement is 1 − log 2 / log 2 = 0
    d, c = D.dci_from_importance(np.array([[0.5, 0.5], [0.0, 0.0]]))
    assert d == pytest.approx(0.0, abs=1e-9) and c == pytest.approx(1.0)
    # a random matrix: as disentanglement_lib writes it with scipy's entropy
    from scipy.stats import entropy

    imp = np.random.default_rng(7).random((6, 3))
    per_code = 1 - entropy(imp.T + 1e-11, base=3)
    per_factor = 1 - entropy(imp + 1e-11, base=6)
    expected = (np.sum(per_code * imp.sum(1) / imp.sum()), np.sum(per_factor * imp.sum(0) / imp.sum()))
    assert D.dci_from_importance(imp) == pytest.approx(expected, rel=1e-9)
    # nothing is important anywhere: finite, not NaN
    assert all(math.isfinite(v) for v in D.dci_from_importance(np.zeros((3, 2))))


def test_degenerate_factor_and_code_do_not_crash():
    rng = np.random.default_rng(4)
    factors = np.stack([rng.integers(0, 3, 120), np.zeros(120, dtype=int)], axis=1)
    codes = np.stack([factors[:, 0] + 0.01 * rng.standard_normal(120), np.zeros(120)], axis=1)
    tr, te = slice(0, 80), slice(80, None)
    m = D.sap_matrix(codes[tr], factors[tr], codes[te], factors[te])
    assert np.isfinite(m).all() and m[0, 1] == m[1, 1] == 1.0  # constant factor: always right
    assert D.sap(codes[tr], factors[tr], codes[te], factors[te]) == pytest.approx((m[0, 0] - m[1, 0]) / 2)
    out = D.dci(codes[tr], factors[tr], codes[te], factors[te], n_estimators=5)
    assert all(math.isfinite(v) for k, v in out.items() if k != "factor_accuracy")
    assert out["informativeness"] > 0.9 and out["disentanglement"] > 0.9
    assert out["factor_accuracy"][1] == 1.0  # a constant factor: always right


def test_non_finite_codes_give_nan_everywhere():
    codes = np.random.default_rng(5).standard_normal((60, 3))
    codes[7, 1] = np.inf
    s = D.scores(codes, _factors(60))
    assert list(s)[:5] == list(D.DISENTANGLEMENT) and all(math.isnan(s[k]) for k in D.DISENTANGLEMENT)
    assert all(math.isnan(v) for k in ("mig_per_factor", "factor_accuracy") for v in s[k])


def test_split_is_seeded_two_to_one_and_capped():
    train, test = D.split(300, seed=0)
    assert len(train) == 200 and len(test) == 100 and not set(train) & set(test)
    assert np.array_equal(D.split(300, seed=0)[0], train)
    assert not np.array_equal(D.split(300, seed=1)[0], train)
    train, test = D.split(30000)
    assert (len(train), len(test)) == (D.NUM_TRAIN, D.NUM_TEST)


def test_scores_are_deterministic_for_a_seed(monkeypatch):
    monkeypatch.setattr(D, "DCI_ESTIMATORS", 5)  # the definition is not under test: keep it quick
    rng = np.random.default_rng(6)
    factors = _factors(150)
    codes = factors + 0.5 * rng.standard_normal(factors.shape)
    first = D.scores(codes, factors, seed=3)
    assert D.scores(codes, factors, seed=3) == first
    assert D.scores(codes, factors, seed=4) != first
