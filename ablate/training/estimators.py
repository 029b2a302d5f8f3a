"""Pure estimator functions on tensors. Shapes carry a leading member axis N where noted.

Owns: the math of the metrics defined in docs/architecture.md (KL, IWAE bound, active units,
mutual information, dead units, linear probe) and the NLL of the trivial model that the
report scales test_nll by (`trivial_nll`, on NumPy arrays). Does not own: each metric's name,
label and direction (metrics.py), or running models and chunking over data (evaluation.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2015): Var_x E_q[z_d|x] ≥ 0.01


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) ‖ N(0, I)) per latent dimension, elementwise: (..., L) → (..., L)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; μ, diag σ²) per dimension (broadcasting)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI)


def log_std_normal(z: Tensor) -> Tensor:
    return -0.5 * (z.square() + LOG_2PI)


def log_prior_ratio(z: Tensor, eps: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; 0, I) − log N(z; μ, diag σ²) per dimension for z = μ + σ·ε: ½(ε² − z² + log σ²)
    (the normalising constants cancel; the same value as the two log densities' difference)."""
    return 0.5 * (eps.square() - z.square() + logvar)


def iwae_bound(log_weights: Tensor, dim: int = 0) -> Tensor:
    """log (1/k) Σ_k w_k from log importance weights along `dim` (Burda et al. 2015)."""
    return torch.logsumexp(log_weights, dim=dim) - math.log(log_weights.shape[dim])


def active_units(mu: Tensor, mask: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> Tensor:
    """Count of dims whose posterior mean varies across data: mu (N, n, L), mask (N, L) → (N,)."""
    var = mu.var(dim=1, unbiased=True)  # (N, L)
    return ((var >= threshold) & mask.bool()).sum(-1)


def mutual_information(log_q_self: Tensor, log_q_cross_lse: Tensor, n: int) -> Tensor:
    """I(x; z) ≈ E_i[log q(z_i|x_i)] − E_i[log (1/n) Σ_j q(z_i|x_j)] (aggregate posterior).

    log_q_self (N, n): log q(z_i | x_i); log_q_cross_lse (N, n): logsumexp_j log q(z_i | x_j).
    Because j = i is in the sum, the estimate never exceeds log n."""
    return (log_q_self - (log_q_cross_lse - math.log(n))).mean(-1)


def dead_fraction(h_min: Tensor, h_max: Tensor, real: Tensor, tol: float = 1e-6) -> Tensor:
    """Fraction of a member's real hidden units whose output is constant over the data.

    h_min, h_max (N, U): per-unit extremes; real (N, U) bool: units that exist for the member."""
    dead = ((h_max - h_min) <= tol) & real
    return dead.sum(-1).float() / real.sum(-1).clamp(min=1).float()


def probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                   test_features: np.ndarray, test_labels: np.ndarray) -> float:
    """Test accuracy of a logistic regression fitted on standardised latent means."""
    return probe_accuracies(train_features, train_labels, [(test_features, test_labels)])[0]


def probe_accuracies(train_features: np.ndarray, train_labels: np.ndarray,
                     evaluations: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """One logistic regression fitted on standardised latent means, scored on each (features,
    labels) set; NaN where a set has no labels, features are not finite, or the training
    labels have one class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    nan = [float("nan")] * len(evaluations)
    if not np.isfinite(train_features).all() or len(np.unique(train_labels)) < 2:
        return nan
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(train_features, train_labels)
    return [float(model.score(f, y)) if y is not None and np.isfinite(f).all() else float("nan")
            for f, y in evaluations]


TRIVIAL_EPS = 1e-6  # the trivial model's pixel probabilities stay in [ε, 1 − ε], its σ² ≥ ε
_ROWS = 4096  # rows per chunk: the sums run in float64 without a float64 copy of a split


def trivial_nll(train: np.ndarray, test: np.ndarray, likelihood: str) -> float:
    """−log p(x) in nats per image of `test` (n, D) under independent pixels fitted to
    `train`: what a model that learns nothing scores, the scale for test_nll.

    bernoulli: p_d, the training mean of pixel d clipped to [ε, 1 − ε]; −Σ_d [x_d log p_d +
    (1 − x_d) log(1 − p_d)], the cross-entropy models.py's Bernoulli likelihood takes on
    values in [0, 1]. gaussian: N(μ_d, σ²) with μ_d the training mean and one σ² for every
    pixel, the training variance averaged over pixels (its maximum-likelihood value), at
    least ε: models.py's Gaussian decoder with its one learned σ, emitting the mean image
    whatever z is. (A variance per pixel would let pixels that never vary, such as MNIST's
    border, score far better than any model with one σ can.)"""
    mean = sum(chunk.sum(0) for chunk in _chunks(train)) / len(train)  # (D,)
    if likelihood == "bernoulli":
        p = np.clip(mean, TRIVIAL_EPS, 1.0 - TRIVIAL_EPS)
        weight, bias = np.log(p) - np.log1p(-p), np.log1p(-p).sum()
        total = sum(-(chunk @ weight + bias).sum() for chunk in _chunks(test))
    elif likelihood == "gaussian":
        squares = sum(np.square(chunk - mean).sum(0) for chunk in _chunks(train)) / len(train)
        var = max(float(squares.mean()), TRIVIAL_EPS)
        norm = len(mean) * math.log(2.0 * math.pi * var)
        total = sum(0.5 * (np.square(chunk - mean).sum(1) / var + norm).sum()
                    for chunk in _chunks(test))
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}")
    return float(total / len(test))


def _chunks(x: np.ndarray):
    """`x` in float64 blocks of _ROWS rows."""
    for s in range(0, len(x), _ROWS):
        yield np.asarray(x[s:s + _ROWS], dtype=np.float64)
