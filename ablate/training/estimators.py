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


def log_normal_pairs(z: Tensor, mu: Tensor, logvar: Tensor, mask: Tensor) -> Tensor:
    """log N(z_i; μ_j, diag σ_j²) summed over the dimensions `mask` (N, 1, L) keeps, for every
    pair of a point z_i (N, m, L) and a Gaussian (μ_j, log σ_j²) (N, n, L): (N, m, n).

    The square (z − μ)²/σ² is expanded into three matrix products (BLAS instead of an
    (N, m, n, L) temporary), in float64: its terms are large where σ is small, and float64
    keeps their difference to ~10⁻⁸ nats."""
    z, mu, logvar, mask = z.double(), mu.double(), logvar.double(), mask.double()
    inv = torch.exp(-logvar) * mask  # 1/σ², zero on dimensions not kept
    quad = (z.square() @ inv.transpose(1, 2) - 2.0 * (z @ (mu * inv).transpose(1, 2))
            + (mu.square() * inv).sum(-1).unsqueeze(1))  # Σ (z_i − μ_j)²/σ_j²: (N, m, n)
    const = ((logvar + LOG_2PI) * mask).sum(-1).unsqueeze(1)  # (N, 1, n)
    return (-0.5 * (quad + const)).float()


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


PROBE_MAX_NEWTON = 50  # Newton steps of the probe's fit (it converges in ~10)
PROBE_ROWS = 1 << 24  # floats in one chunk of members' Hessian terms


def probe_accuracies(train: Tensor, mask: Tensor, y_train: np.ndarray,
                     evaluations: list[tuple[Tensor, np.ndarray | None]]) -> Tensor:
    """Per member, the accuracy on each evaluation set of a multinomial logistic regression
    fitted on its standardised latent means: (N, len(evaluations)).

    train (N, n, L) and each evaluation's features (N, m, L) are the members' codes, `mask`
    (N, L) their real latent dimensions (padding is a feature of zeros: its weight is held at
    zero by the penalty). The model is scikit-learn's LogisticRegression() on StandardScaler()
    features — cross-entropy summed over the training rows plus ½‖W‖² (C = 1; the intercepts
    are not penalised) — minimised for every member at once by Newton's method with
    backtracking, in float64. NaN for a member whose features are not finite, for a set
    without labels, and for all when the training labels have one class."""
    N = train.shape[0]
    classes, y = np.unique(y_train, return_inverse=True)
    out = torch.full((N, len(evaluations)), float("nan"), dtype=torch.float64)
    finite = torch.isfinite(train).flatten(1).all(1).cpu()
    if len(classes) < 2:
        return out
    m = mask.to(torch.float64).unsqueeze(1)
    x = torch.where(torch.isfinite(train), train.to(torch.float64), 0.0) * m
    mean = x.mean(1, keepdim=True)
    std = x.std(1, unbiased=False, keepdim=True)
    std = torch.where(std > 0, std, 1.0)  # a constant feature is left unscaled, as sklearn does

    def design(f: Tensor) -> Tensor:
        z = (f.to(torch.float64) - mean) / std * m
        return torch.cat([z, torch.ones_like(z[..., :1])], -1)  # (N, rows, L + 1)

    theta = _fit_softmax(design(x), torch.as_tensor(y, device=train.device))
    for j, (f, labels) in enumerate(evaluations):
        if labels is None:
            continue
        ok = torch.isfinite(f).flatten(1).all(1).cpu() & finite
        pred = classes[(design(torch.where(torch.isfinite(f), f, 0.0)) @ theta).argmax(-1).cpu().numpy()]
        acc = torch.as_tensor((pred == np.asarray(labels)[None, :]).mean(1))
        out[:, j] = torch.where(ok, acc, float("nan"))
    return out


def _fit_softmax(x: Tensor, y: Tensor) -> Tensor:
    """Weights θ (N, P, C) minimising Σ_i CE(x_i θ, y_i) + ½ Σ θ² over all rows but the last
    (the intercept, x's column of ones) for each member, by Newton's method: x (N, n, P)."""
    N, n, P = x.shape
    C = int(y.max()) + 1
    onehot = torch.nn.functional.one_hot(y, C).to(x.dtype)  # (n, C)
    ridge = torch.ones(P, C, dtype=x.dtype, device=x.device)
    ridge[-1] = 0.0  # intercepts unpenalised; their common shift is the one flat direction
    theta = torch.zeros(N, P, C, dtype=x.dtype, device=x.device)

    def objective(t: Tensor) -> Tensor:
        z = x @ t
        return (torch.logsumexp(z, -1) - (z * onehot).sum(-1)).sum(1) + 0.5 * (ridge * t.square()).sum((1, 2))

    f = objective(theta)
    for _ in range(PROBE_MAX_NEWTON):
        p = torch.softmax(x @ theta, -1)  # (N, n, C)
        grad = (x.transpose(1, 2) @ (p - onehot) + ridge * theta).flatten(1)  # (N, P·C)
        step = torch.linalg.solve(_softmax_hessian(x, p, ridge), grad)
        decrement = (grad * step).sum(1)  # Newton decrement²: the predicted decrease × 2
        if bool((decrement <= 1e-12 * n).all()):
            break
        t = torch.ones(N, dtype=x.dtype, device=x.device)
        for _ in range(30):  # Armijo backtracking, member by member
            trial = objective(theta - t.view(N, 1, 1) * step.view(N, P, C))
            short = trial > f - 0.25 * t * decrement
            if not bool(short.any()):
                break
            t = torch.where(short, t / 2, t)
        else:
            trial = objective(theta - t.view(N, 1, 1) * step.view(N, P, C))
        theta, f = theta - t.view(N, 1, 1) * step.view(N, P, C), trial
    return theta


def _softmax_hessian(x: Tensor, p: Tensor, ridge: Tensor) -> Tensor:
    """Hessian (N, P·C, P·C) of the probe's objective at class probabilities p (N, n, C):
    Σ_i x_i x_iᵀ ⊗ (diag p_i − p_i p_iᵀ) + the penalty, with 10⁻⁹ on the diagonal for the
    intercepts' flat direction (it moves no prediction). Its sums run in float32 (half the
    time): Newton's steps only need a close Hessian, the gradient they zero is float64."""
    N, n, P = x.shape
    C = p.shape[-1]
    x, p = x.float(), p.float()
    chunk = max(1, PROBE_ROWS // (n * P * C))
    parts = []
    for s in range(0, N, chunk):
        xs, ps = x[s:s + chunk], p[s:s + chunk]
        q = (xs.unsqueeze(-1) * ps.unsqueeze(-2)).flatten(2)  # (c, n, P·C): x_ia p_ic
        outer = q.transpose(1, 2) @ q  # Σ_i (x_ia p_ic)(x_ib p_id)
        diag = (xs.transpose(1, 2) @ q).view(-1, P, P, C)  # Σ_i x_ia x_ib p_ic
        block = torch.diag_embed(diag)  # (c, P, P, C, C): δ_cd
        parts.append(block.permute(0, 1, 3, 2, 4).reshape(-1, P * C, P * C) - outer)
    h = torch.cat(parts).to(ridge.dtype)
    return h + torch.diag_embed((ridge.flatten() + 1e-9).expand(N, -1))


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
