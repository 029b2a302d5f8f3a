"""Sample quality in a feature space, on arrays: torch-free (NumPy and SciPy).

Owns: the math of the sample-quality metrics between real and generated features (n, d):
the Fréchet distance (`fid`), the kernel inception distance (`kid`, unbiased, × 10³),
precision and recall (`precision_recall`, Kynkäänniemi et al. 2019) and class coverage
(`coverage`).
Does not own: the feature extractor (classifier.py) or when the metrics are computed
(samples.py).

The Fréchet distance is written with SciPy's `linalg.sqrtm`, as pytorch-fid computes it,
rather than taken from torchmetrics: our features are a few thousand small rows already in
NumPy, the formula is four lines, and it adds no dependency.
"""

from __future__ import annotations

import numpy as np

QUALITY_SAMPLES = 2000
"""Sample quality compares this many generated images with as many real ones (fewer when the
split is smaller): FID is biased by the count, so every member is scored at the same count."""


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½) of Gaussians fitted to the two sets.
    Biased by the sample count: compare sets of equal size only."""
    import warnings

    from scipy import linalg

    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    with warnings.catch_warnings():  # features a ReLU never fires on make Σ singular: harmless
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_r @ cov_f)
    if not np.isfinite(root).all():  # near-singular product: nudge both, as pytorch-fid does
        eps = np.eye(len(cov_r)) * 1e-6
        root = linalg.sqrtm((cov_r + eps) @ (cov_f + eps))
    root = np.real(root)
    return float(np.sum((mu_r - mu_f) ** 2) + np.trace(cov_r) + np.trace(cov_f) - 2.0 * np.trace(root))


KID_SCALE = 1e3
"""`kid` is reported × 10³, the unit papers report KID in."""


def kid(real: np.ndarray, fake: np.ndarray) -> float:
    """KID × 10³: the unbiased squared MMD with the cubic polynomial kernel
    k(x, y) = (x·y / d + 1)³ (Bińkowski et al. 2018), over all pairs of the two sets, times
    KID_SCALE."""
    d = real.shape[1]
    k_rr = (real @ real.T / d + 1.0) ** 3
    k_ff = (fake @ fake.T / d + 1.0) ** 3
    k_rf = (real @ fake.T / d + 1.0) ** 3
    m, n = len(real), len(fake)
    within_r = (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
    within_f = (k_ff.sum() - np.trace(k_ff)) / (n * (n - 1))
    return float(KID_SCALE * (within_r + within_f - 2.0 * k_rf.mean()))


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of a (m, d) and b (n, d): √(‖a‖² + ‖b‖² − 2 a·b),
    in float64 through one matrix product (BLAS, every core), where SciPy's cdist loops on one
    core: on 2 000 × 2 000 points of 128 features, milliseconds instead of 150 ms."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    sq = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


PR_NEIGHBOURS = 3  # k of the k-NN balls that make a set's manifold


def knn_radius(x: np.ndarray, k: int = PR_NEIGHBOURS) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour in its own set (itself excluded)."""
    dist = distances(x, x)
    np.fill_diagonal(dist, 0.0)  # a point's distance to itself, exactly (the formula rounds)
    return np.partition(dist, k, axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_NEIGHBOURS,
                     r_real: np.ndarray | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the share of generated
    samples inside the real manifold (the union of k-NN balls around real samples), and the
    share of real samples inside the generated manifold. `r_real`: the real set's
    `knn_radius(real, k)`, when the caller measures many fake sets against one real set."""
    r_real = knn_radius(real, k) if r_real is None else r_real
    r_fake = knn_radius(fake, k)
    dist = distances(fake, real)  # (fake, real)
    precision = float((dist <= r_real[None, :]).any(1).mean())
    recall = float((dist <= r_fake[:, None]).any(0).mean())
    return precision, recall


def coverage(predicted: np.ndarray, classes: int) -> float:
    """The share of the classes that the classifier finds among the generated samples."""
    return len(np.unique(predicted)) / classes
