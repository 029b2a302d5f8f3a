"""Disentanglement metrics on arrays: latent means (N, K) against ground-truth factors (N, F).

Owns: MIG (Chen et al. 2018), SAP (Kumar et al. 2018) and DCI disentanglement, completeness
and informativeness (Eastwood & Williams 2018) as google-research/disentanglement_lib
computes them (evaluation/metrics/mig.py, sap_score.py, dci.py), written in NumPy and
scikit-learn on codes and factors we already hold: the discrete mutual information and
factor entropy, the histogram discretizer, the SAP score matrix, the DCI importance matrix
and `scores`, which draws the seeded train/test split and caps the row counts as
disentanglement_lib's configs do.
Does not own: computing the latent means or labelling images with factors, nor each
metric's label and direction (study/metrics.py).

Where disentanglement_lib would crash or return NaN on degenerate input, we chose:
- MIG: a factor with zero entropy is left out of the mean (NaN when every factor is); with
  one code dimension the second-best MI is taken as 0.
- SAP: a factor with one value in the training half gets the accuracy of predicting that
  value for every code dimension, so its gap is 0 and it counts 0 in the mean; a constant code
  dimension is fitted as any other (LinearSVC then learns the intercept only). The SVC is
  solved in the primal (`dual=False`): the same optimum as the dual solver that
  disentanglement_lib's scikit-learn used, without its iteration cap or shuffling.
- DCI: a factor with one value in the training half gets zero importance everywhere and the
  accuracy of predicting that value; rows/columns of zero importance get entropy of a uniform
  distribution and zero weight (disentanglement_lib's 1e-11 smoothing), so no NaN. With one
  factor (one code) the normalised entropy has base 1: each code's disentanglement (each
  factor's completeness) is then 1.
"""

from __future__ import annotations

import math

import numpy as np

from ablate.study.metrics import DISENTANGLEMENT

HISTOGRAM_BINS = 20  # disentanglement_lib's discretizer.num_bins for MIG
NUM_TRAIN, NUM_TEST = 10000, 5000  # disentanglement_lib's caps (MIG uses NUM_TRAIN rows)
DCI_ESTIMATORS = 100
"""Boosting stages of DCI's GradientBoostingClassifier: scikit-learn's default, as in
disentanglement_lib. Lower it only knowingly: importances and accuracy change with it."""
DCI_RANDOM_STATE = 0
_ENTROPY_EPS = 1e-11  # disentanglement_lib's smoothing of importance before the entropy


def _labels(column: np.ndarray) -> tuple[np.ndarray, int]:
    """Values of one column as indices 0..n-1 and n."""
    values, inverse = np.unique(column, return_inverse=True)
    return inverse.ravel(), len(values)


def _mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats from the contingency counts of two label columns (as sklearn's
    mutual_info_score: plug-in estimate, clipped at 0)."""
    ia, na = _labels(a)
    ib, nb = _labels(b)
    if na == 1 or nb == 1:
        return 0.0
    counts = np.bincount(ia * nb + ib, minlength=na * nb).reshape(na, nb).astype(np.float64)
    n = counts.sum()
    ni, nj = counts.sum(1), counts.sum(0)
    r, c = np.nonzero(counts)
    nij = counts[r, c]
    mi = np.sum(nij / n * (np.log(nij) + math.log(n) - np.log(ni[r]) - np.log(nj[c])))
    return max(float(mi), 0.0)


def mutual_information(codes_discrete: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Discrete MI (nats) between each code column and each factor column: (N, K), (N, F) →
    (K, F)."""
    k, f = codes_discrete.shape[1], factors.shape[1]
    return np.array([[_mutual_info(codes_discrete[:, i], factors[:, j]) for j in range(f)]
                     for i in range(k)], dtype=np.float64).reshape(k, f)


def factor_entropy(factors: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of each factor column: (N, F) → (F,)."""
    out = []
    for j in range(factors.shape[1]):
        p = np.bincount(_labels(factors[:, j])[0]) / len(factors)
        out.append(float(-np.sum(p * np.log(p))))
    return np.array(out, dtype=np.float64)


def discretize(codes: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Bin index (1..bins) of each code per dimension on np.histogram's equal-width edges over
    the column's range (disentanglement_lib's `_histogram_discretize`): (N, K) → int (N, K)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], bins)[1]
        out[:, i] = np.digitize(codes[:, i], edges[:-1])
    return out


def _top_two_gap(matrix: np.ndarray) -> np.ndarray:
    """Best minus second-best entry of each column (second taken as 0 with one row)."""
    ranked = np.sort(matrix, axis=0)[::-1]
    second = ranked[1] if len(ranked) > 1 else np.zeros(matrix.shape[1])
    return ranked[0] - second


def mig_per_factor(codes: np.ndarray, factors: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Each factor's (top-1 − top-2 MI over codes) / H(factor), (F,); NaN for a constant factor."""
    m = mutual_information(discretize(codes, bins), factors)
    h = factor_entropy(factors)
    return np.where(h > 0, _top_two_gap(m) / np.where(h > 0, h, 1.0), np.nan)


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """Mutual information gap: mean over factors of (top-1 − top-2 MI over codes) / H(factor)."""
    gaps = mig_per_factor(codes, factors, bins)
    return float(np.nanmean(gaps)) if np.isfinite(gaps).any() else float("nan")


def _sap_score(x_train, y_train, x_test, y_test) -> float:
    """Test accuracy of LinearSVC(C=0.01, balanced) on one code dimension for one factor."""
    from sklearn.svm import LinearSVC

    classes = np.unique(y_train)
    if len(classes) < 2:
        return float(np.mean(y_test == classes[0]))
    model = LinearSVC(C=0.01, class_weight="balanced", dual=False)
    model.fit(x_train[:, None], y_train)
    return float(np.mean(model.predict(x_test[:, None]) == y_test))


def sap_matrix(codes_train, factors_train, codes_test, factors_test) -> np.ndarray:
    """SAP score matrix (K, F) for discrete factors: test accuracy per (code, factor)."""
    k, f = codes_train.shape[1], factors_train.shape[1]
    return np.array([[_sap_score(codes_train[:, i], factors_train[:, j], codes_test[:, i],
                                 factors_test[:, j]) for j in range(f)] for i in range(k)],
                    dtype=np.float64).reshape(k, f)


def sap(codes_train: np.ndarray, factors_train: np.ndarray,
        codes_test: np.ndarray, factors_test: np.ndarray) -> float:
    """Separated attribute predictability: mean over factors of top-1 − top-2 SAP score."""
    return float(np.mean(_top_two_gap(sap_matrix(codes_train, factors_train, codes_test,
                                                 factors_test))))


def dci_importance(codes_train, factors_train, codes_test, factors_test,
                   n_estimators: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Importance matrix (K, F) from one GradientBoostingClassifier per factor (DCI_ESTIMATORS
    stages unless given), and each factor's test accuracy (F,)."""
    from sklearn.ensemble import GradientBoostingClassifier

    k, f = codes_train.shape[1], factors_train.shape[1]
    importance, accuracy = np.zeros((k, f), dtype=np.float64), []
    for j in range(f):
        y_train, y_test = factors_train[:, j], factors_test[:, j]
        classes = np.unique(y_train)
        if len(classes) < 2:
            accuracy.append(float(np.mean(y_test == classes[0])))
            continue
        model = GradientBoostingClassifier(n_estimators=n_estimators or DCI_ESTIMATORS,
                                           random_state=DCI_RANDOM_STATE)
        model.fit(codes_train, y_train)
        importance[:, j] = np.abs(model.feature_importances_)
        accuracy.append(float(np.mean(model.predict(codes_test) == y_test)))
    return importance, np.asarray(accuracy)


def _one_minus_entropy(weights: np.ndarray) -> np.ndarray:
    """1 − entropy of each row of `weights` normalised to sum 1, in base = row length
    (smoothed by 1e-11 as disentanglement_lib; 1 where the base is 1)."""
    if weights.shape[1] < 2:
        return np.ones(weights.shape[0])
    p = weights + _ENTROPY_EPS
    p = p / p.sum(1, keepdims=True)
    return 1.0 - (-np.sum(p * np.log(p), axis=1) / math.log(weights.shape[1]))


def _weighted(per: np.ndarray, totals: np.ndarray) -> float:
    """Σ per · totals / Σ totals, with equal weights when every total is 0."""
    weights = totals / totals.sum() if totals.sum() > 0 else np.full(len(totals), 1 / len(totals))
    return float(np.sum(per * weights))


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """DCI disentanglement (per code, weighted by the code's share of importance) and
    completeness (per factor, weighted by the factor's share) of an importance matrix (K, F)."""
    d = _weighted(_one_minus_entropy(importance), importance.sum(1))
    c = _weighted(_one_minus_entropy(importance.T), importance.sum(0))
    return d, c


def dci(codes_train: np.ndarray, factors_train: np.ndarray,
        codes_test: np.ndarray, factors_test: np.ndarray,
        n_estimators: int | None = None) -> dict[str, float]:
    """DCI disentanglement, completeness, informativeness (mean test accuracy) and each
    factor's accuracy (`factor_accuracy`, (F,))."""
    importance, accuracy = dci_importance(codes_train, factors_train, codes_test, factors_test,
                                          n_estimators)
    d, c = dci_from_importance(importance)
    return {"disentanglement": d, "completeness": c, "informativeness": float(np.mean(accuracy)),
            "factor_accuracy": accuracy}


def split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test row indices in disentanglement_lib's 2:1 ratio, capped at
    NUM_TRAIN / NUM_TEST rows."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = min(NUM_TRAIN, (2 * n) // 3)
    n_test = min(NUM_TEST, n - n_train)
    return order[:n_train], order[n_train:n_train + n_test]


def scores(codes: np.ndarray, factors: np.ndarray, seed: int = 0,
           n_estimators: int | None = None) -> dict[str, float | list[float]]:
    """All of DISENTANGLEMENT for latent means (N, K) and factor class indices (N, F): MIG on
    up to NUM_TRAIN rows, SAP and DCI (`n_estimators` boosting stages; None: DCI_ESTIMATORS)
    on a seeded 2:1 split; and per factor (lists, in the factors' order) MIG
    (`mig_per_factor`) and the DCI trees' test accuracy (`factor_accuracy`: which factors the
    code holds at all). NaN everywhere when a code is not finite (a diverged model)."""
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if not np.isfinite(codes).all():
        nan = [float("nan")] * factors.shape[1]
        return {**{name: float("nan") for name in DISENTANGLEMENT}, "mig_per_factor": nan, "factor_accuracy": nan}
    rows = (np.arange(len(codes)) if len(codes) <= NUM_TRAIN
            else np.random.default_rng(seed).permutation(len(codes))[:NUM_TRAIN])
    train, test = split(len(codes), seed)
    parts = (codes[train], factors[train], codes[test], factors[test])
    out = dci(*parts, n_estimators=n_estimators)
    gaps = mig_per_factor(codes[rows], factors[rows])
    return {"mig": float(np.nanmean(gaps)) if np.isfinite(gaps).any() else float("nan"), "sap": sap(*parts),
            "dci_disentanglement": out["disentanglement"],
            "dci_completeness": out["completeness"],
            "dci_informativeness": out["informativeness"],
            "mig_per_factor": [float(g) for g in gaps],
            "factor_accuracy": [float(a) for a in out["factor_accuracy"]]}
