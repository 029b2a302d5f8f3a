"""What a design can tell: exact signed-rank p-values and the smallest p a design can reach,
paired differences with their t-interval, the Bayesian signed-rank test with a region of
practical equivalence, the activation × axis interaction test, the agreement of rankings, and
whether a training curve was still falling. Pure functions on arrays; torch-free.

Owns: the math behind "cannot tell with n blocks", P(better / equivalent / worse), "the best
activation depends on X" and "train longer". Does not own: which blocks are compared
(stats.blocks, strata.py), or wording (sections.py).
References: Wilcoxon's signed-rank test conditioned on the observed |differences| (exact
enumeration of signs); Holm (1979); Benavoli, Corani, Demšar & Zaffalon (2017), "Time for a
change", JMLR 18 — the Bayesian signed-rank test of Benavoli et al. (2014), as `baycomp`
implements it (the tests check ours draws the same posterior); Kendall's W (coefficient of
concordance).
"""

from __future__ import annotations

import math

import numpy as np

EXACT_UP_TO = 1000
"""Signed-rank p-values are exact up to this many nonzero pairs (the null distribution of the
rank sum by dynamic programming over the doubled mid-ranks); beyond it, the normal
approximation."""


def signed_rank_p(d) -> float:
    """Two-sided Wilcoxon signed-rank p of the paired differences `d` (zeros dropped, tied
    |d| given mid-ranks), exact: the null distribution of the positive rank sum over all 2ⁿ
    equally likely sign assignments, counted by dynamic programming, so ties never make a
    result look stronger than the exact test can be. 1.0 with no nonzero pair."""
    from scipy.stats import rankdata, wilcoxon

    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d) & (d != 0)]
    n = len(d)
    if n == 0:
        return 1.0
    if n > EXACT_UP_TO:
        return float(wilcoxon(d, method="approx").pvalue)
    doubled = np.rint(2 * rankdata(np.abs(d))).astype(int)  # mid-ranks are halves
    total = int(doubled.sum())
    counts = np.zeros(total + 1)
    counts[0] = 1.0
    for r in doubled:  # each rank is positive or not with probability 1/2
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[:-r]
        counts = 0.5 * (counts + shifted)
    observed = abs(2 * int(doubled[d > 0].sum()) - total)
    deviation = np.abs(2 * np.arange(total + 1) - total)
    return float(min(1.0, counts[deviation >= observed].sum()))


def min_signed_rank_p(n: int, m: int = 1) -> float:
    """The smallest p a two-sided exact signed-rank test can reach with n nonzero pairs
    (2 / 2ⁿ: every pair on one side), after Holm over m comparisons (× m: the smallest p is
    the first one Holm adjusts)."""
    return 1.0 if n < 1 else min(1.0, m * 2.0 ** (1 - n))


def pairs_needed(m: int = 1, alpha: float = 0.05) -> int:
    """The fewest pairs with which the exact test, Holm-adjusted over m, can reach p ≤ α."""
    return max(1, math.ceil(1 + math.log2(m / alpha)))


FRIEDMAN_PERMUTATIONS = 10_000


def friedman_test(ranks: np.ndarray, permutations: int = FRIEDMAN_PERMUTATIONS,
                  seed: int = 0) -> tuple[float, float, float]:
    """The Friedman test of k methods over n blocks from each block's ranks (n, k): χ²_F
    (with the tie correction, as SciPy's `friedmanchisquare`), its p by permutation (each
    block's ranks shuffled independently, seeded; the χ² approximation is poor with few
    blocks), and the smallest p the design can reach: every block ranking the methods the
    same way, (k!)^(1 − n), but never below 1/(permutations + 1)."""
    ranks = np.asarray(ranks, dtype=float)
    n, k = ranks.shape
    sums = ranks.sum(0)
    ties = sum(((np.unique(row, return_counts=True)[1] ** 3) - np.unique(row, return_counts=True)[1]).sum()
               for row in ranks)
    denominator = 1 - ties / (n * (k ** 3 - k))
    stat = float(12 / (n * k * (k + 1)) * ((sums - n * (k + 1) / 2) ** 2).sum() / denominator) \
        if denominator > 0 else 0.0
    observed = (sums ** 2).sum()
    rng, hits = np.random.default_rng(seed), 0
    for start in range(0, permutations, 1000):
        b = min(1000, permutations - start)
        order = rng.random((b, n, k)).argsort(-1)
        shuffled = np.take_along_axis(np.broadcast_to(ranks, (b, n, k)), order, -1)
        hits += int(((shuffled.sum(1) ** 2).sum(1) >= observed - 1e-9).sum())
    p = (hits + 1) / (permutations + 1)
    min_p = max(math.exp((1 - n) * math.lgamma(k + 1)), 1 / (permutations + 1))
    return stat, float(p), float(min(1.0, min_p))


def bayes_signed_rank(d, rope: float, prior: float = 0.5, samples: int = 50_000,
                      seed: int = 0, chunk: int = 2_000) -> tuple[float, float, float]:
    """P(left), P(rope), P(right) of the Bayesian signed-rank test (Benavoli et al. 2014/2017)
    for paired differences d (left: d < −rope). The Dirichlet process posterior puts weight
    `prior` on a pseudo-observation at 0 and 1 on each difference; each posterior draw w gives
    θ_left = Σᵢⱼ wᵢwⱼ [dᵢ + dⱼ < −2·rope] (ties count half), θ_right likewise, θ_rope the
    rest; each probability is the share of draws in which its region is the largest. The
    draws are baycomp's (`np.random.RandomState(seed).dirichlet`), so `baycomp.SignedRankTest
    .probs(0, d, rope, random_state=seed)` gives the same numbers; this is its loop vectorised."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    z = np.concatenate([[0.0], d])
    sums = z[:, None] + z[None, :]
    below = (sums < -2 * rope) + 0.5 * (sums == -2 * rope)
    above = (sums > 2 * rope) + 0.5 * (sums == 2 * rope)
    weights = np.ones(len(z))
    weights[0] = prior
    draws = np.random.RandomState(seed).dirichlet(weights, samples)
    wins = np.zeros(3)
    for start in range(0, samples, chunk):
        w = draws[start:start + chunk]
        left = ((w @ below) * w).sum(1)  # wᵀ·below·w per draw; a matmul, 12× einsum's speed
        right = ((w @ above) * w).sum(1)
        theta = np.stack([left, 1.0 - left - right, right], 1)
        wins += np.bincount(theta.argmax(1), minlength=3)
    p = wins / samples
    return float(p[0]), float(p[1]), float(p[2])


def kendall_w(rankings: np.ndarray) -> float:
    """Kendall's coefficient of concordance of m rankings (rows) of the same k items: 1 when
    every ranking agrees, 0 when they are unrelated. Rows are re-ranked (average ranks of
    ties); no tie correction."""
    from scipy.stats import rankdata

    r = np.vstack([rankdata(row) for row in np.asarray(rankings, dtype=float)])
    m, k = r.shape
    if m < 2 or k < 2:
        return float("nan")
    s = ((r.sum(0) - m * (k + 1) / 2) ** 2).sum()
    return float(12 * s / (m ** 2 * (k ** 3 - k)))


def _between_slices(ranks: np.ndarray, labels: np.ndarray, levels: np.ndarray) -> float:
    """Σ over slices of n_slice · ‖its mean rank profile − the overall mean profile‖²."""
    overall = ranks.mean(0)
    total = 0.0
    for v in levels:
        part = ranks[labels == v]
        if len(part):
            total += len(part) * float(((part.mean(0) - overall) ** 2).sum())
    return total


def interaction_test(ranks: np.ndarray, labels, groups, permutations: int = 4_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Does the ranking of k activations change with an axis? `ranks` (blocks, k) holds each
    matched block's ranks of the activations, `labels` the block's slice (its value of the
    axis) and `groups` which blocks are matched apart from that axis (same other cells and
    seed). The statistic is the between-slice spread of the mean rank profiles; its null
    distribution comes from permuting the slice labels within each group (seeded), so a
    shift of every activation alike in one slice (the same ranks) is no evidence, and a
    crossover is. Returns (statistic, p, the smallest p the design can reach: a global
    relabelling of the L slices leaves the statistic as it is, so (L!)^(1 − groups) with
    equal groups, never below 1/(permutations + 1))."""
    ranks = np.asarray(ranks, dtype=float)
    labels, groups = np.asarray(labels), np.asarray(groups)
    levels = np.unique(labels)
    observed = _between_slices(ranks, labels, levels)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    hits = 0
    shuffled = labels.copy()
    for _ in range(permutations):
        for idx in members:
            shuffled[idx] = labels[idx][rng.permutation(len(idx))]
        hits += _between_slices(ranks, shuffled, levels) >= observed - 1e-12
    p = (hits + 1) / (permutations + 1)
    arrangements = sum(math.lgamma(len(idx) + 1) for idx in members) - math.lgamma(len(levels) + 1)
    min_p = max(math.exp(-arrangements), 1 / (permutations + 1))
    return observed, float(p), float(min(1.0, min_p))


def still_falling(curves: np.ndarray, window: int) -> tuple[float, float]:
    """How much a loss fell over the last `window` epochs, mean over seeds, against the seeds'
    spread of the final value. `curves` (seeds, epochs), lower is better. Returns (mean drop,
    spread: the final values' standard deviation, 0 with one seed)."""
    c = np.asarray(curves, dtype=float)
    window = max(1, min(window, c.shape[1] - 1))
    drop = c[:, -1 - window] - c[:, -1]
    spread = float(c[:, -1].std(ddof=1)) if len(c) > 1 else 0.0
    return float(np.nanmean(drop)), spread
