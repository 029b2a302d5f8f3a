"""Statistics over seeds: Student-t intervals, per-cell summaries, the one ranking, and the rank
tests over matched blocks (Friedman, Nemenyi, each activation against the baseline: paired
difference, exact Wilcoxon with Holm, what the design can reach, Bayesian signed-rank). Pure
functions; the underlying math of power and equivalence is evidence.py's.

Owns: how uncertainty is computed and which claims a report may make. Does not own: reading
results (tables.py) or drawing (plots.py). Seeds are repeats, never a search axis: every
interval here is over seeds. Definitions: docs/architecture.md, "Statistics".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.analysis import evidence
from ablate.study.metrics import METRICS

LEVEL = 0.95


def t_ci(values, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean (n − 1 degrees of freedom): the interval that
    fits a handful of seeds (a percentile bootstrap of 3 values is only their range).
    Non-finite values are left out; fewer than two values give (v, nan, nan)."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) == 1:
        return mean, float("nan"), float("nan")
    half = float(t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def clipped(metric: str, low: float, high: float) -> tuple[float, float]:
    """An interval clipped to the metric's range (metrics.Metric.low / high), if it has one."""
    m = METRICS.get(metric)
    if m is None:
        return low, high
    return (max(low, m.low) if m.low is not None else low, min(high, m.high) if m.high is not None else high)


def summarize(frame: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Mean, t-interval (clipped to the metric's range) and count of `metric` over seeds for
    each group of `by` (ok members only)."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for keys, group in ok.groupby(by, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        mean, lo, hi = t_ci(group[metric])
        lo, hi = clipped(metric, lo, hi)
        rows.append({**dict(zip(by, keys)), "mean": mean, "ci_low": lo, "ci_high": hi,
                     "n": int(group[metric].notna().sum())})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


def overall_by_seed(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each activation's metric averaged over cells, one value per seed (the repeat unit).

    Only cells where the activation has a finished member for that seed count."""
    ok = frame[frame["status"] == "ok"]
    return ok.groupby(["activation", "seed"], as_index=False)[metric].mean()


def ranking(frame: pd.DataFrame, metric: str, maximize: bool,
            avg_ranks: pd.Series | None = None) -> pd.DataFrame:
    """Activations best first, each with its mean over cells, a t-interval over seeds and n.

    The order is the one the tests use, the average rank within matched blocks, when
    `avg_ranks` is given (the mean breaks ties and places activations without blocks last);
    without it (a search, no blocks) the mean's."""
    per_seed = overall_by_seed(frame, metric)
    table = summarize(per_seed.assign(status="ok"), metric, ["activation"])
    failed = frame.groupby("activation")["status"].apply(lambda s: int((s == "failed").sum()))
    table["failed"] = table["activation"].map(failed).fillna(0).astype(int)
    table["avg_rank"] = table["activation"].map(avg_ranks) if avg_ranks is not None else np.nan
    by_mean = table["mean"] * (-1 if maximize else 1)
    table = table.assign(_m=by_mean).sort_values(["avg_rank", "_m"], na_position="last", kind="stable")
    table = table.drop(columns="_m").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


# ----------------------------------------------------------------------------- rank tests
ALPHA = 0.05


def p_text(p: float, floor: float) -> str:
    """'p = 0.012', or 'p ≤ 0.032, this test's floor' when a permutation p sits (within its
    Monte Carlo error) at the smallest value its design and permutation count can give: then
    it is a bound, and more seeds or groups, not a smaller p, would make it stronger."""
    return f"p ≤ {max(p, floor):.2g}, this test's floor" if p <= floor * 1.1 else f"p = {p:.2g}"


def blocks(frame: pd.DataFrame, metric: str, cells: list[str], maximize: bool) -> pd.DataFrame:
    """Matched blocks: one row per (cell, seed), one column per activation.

    Within a block every activation was trained on the same cell with the same seed, hence the
    same data order and noise (common random numbers), so the comparison is paired. A member
    that failed (diverged) scores worst in its block; blocks where an activation has no
    member at all (not run yet) are left out."""
    keys = [*cells, "seed"]
    values = frame[metric].where(frame["status"] == "ok")
    worst = -np.inf if maximize else np.inf
    values = values.where(values.notna() | (frame["status"] != "failed"), worst)
    wide = frame.assign(_v=values).pivot_table(index=keys, columns="activation", values="_v",
                                                aggfunc="first", dropna=False)
    return wide.dropna(how="any")


def block_ranks(wide: pd.DataFrame, maximize: bool) -> np.ndarray:
    """Each block's ranks of the activations (1 = best; ties share the average rank)."""
    from scipy.stats import rankdata

    signed = -wide.values if maximize else wide.values
    return np.vstack([rankdata(row) for row in signed])


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        adjusted[idx] = running
    return adjusted


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of average ranks for k methods over n blocks (Demšar 2006)."""
    from scipy.stats import studentized_range

    if k < 2 or n < 1:
        return float("nan")
    q = studentized_range.ppf(1.0 - alpha, k, np.inf) / np.sqrt(2.0)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n)))


@dataclass
class Comparison:
    """Every activation against every other on one metric, over matched blocks."""

    metric: str
    maximize: bool
    n_blocks: int
    avg_ranks: pd.Series  # activation → average rank (1 = best), best first
    friedman_stat: float
    friedman_p: float
    friedman_min_p: float  # the smallest p the (permutation) Friedman test can reach with k and n
    cd: float
    top_group: list[str]  # activations not separable from the best (within the CD)
    versus: pd.DataFrame  # each activation against the baseline (see `versus_baseline`)
    baseline: str | None
    wide: pd.DataFrame  # the matched blocks (cell × seed) × activations
    alpha: float = ALPHA

    @property
    def separable(self) -> bool:
        return self.friedman_p < self.alpha

    @property
    def cells(self) -> int:
        """How many cells the blocks span (blocks = cells × seeds)."""
        return max(1, self.n_blocks // max(1, self.wide.index.get_level_values("seed").nunique()))

    @property
    def friedman_decidable(self) -> bool:
        return self.friedman_min_p <= self.alpha


def compare(frame: pd.DataFrame, metric: str, cells: list[str], maximize: bool,
            baseline: str | None = "relu", alpha: float = ALPHA, rope: float = 0.0) -> Comparison | None:
    """Friedman test, average ranks with Nemenyi CD, and each activation against `baseline`
    (`versus_baseline`). None with < 2 blocks or < 2 activations."""
    wide = blocks(frame, metric, cells, maximize)
    k, n = wide.shape[1], wide.shape[0]
    if k < 2 or n < 2:
        return None
    ranks = block_ranks(wide, maximize)
    avg = pd.Series(ranks.mean(0), index=wide.columns).sort_values(kind="stable")
    stat, p, min_p = evidence.friedman_test(ranks) if k >= 3 else (float("nan"), float("nan"), 1.0)
    cd = nemenyi_cd(k, n, alpha)
    best = avg.iloc[0]
    top = [a for a, r in avg.items() if r - best < cd] if k >= 3 and p < alpha else list(avg.index)
    versus = versus_baseline(wide, list(avg.index), baseline, maximize, alpha, rope)
    return Comparison(metric, maximize, n, avg, stat, p, min_p, cd, top, versus, baseline, wide, alpha)


VERSUS_COLUMNS = ["activation", "n_blocks", "diff", "diff_low", "diff_high", "effect_r", "p",
                  "p_holm", "min_p", "decidable", "needs_blocks", "p_better", "p_equivalent",
                  "p_worse", "verdict"]


def versus_baseline(wide: pd.DataFrame, order: list[str], baseline: str | None, maximize: bool,
                    alpha: float = ALPHA, rope: float = 0.0) -> pd.DataFrame:
    """Each activation against the baseline over the matched blocks: the paired mean
    difference (activation − baseline, in the metric's unit) with its t-interval; the exact
    Wilcoxon signed-rank p, Holm-adjusted over the activations; the smallest Holm-adjusted p
    the design can reach (`min_p`), whether that is ≤ α (`decidable`) and how many blocks
    would make it so; the matched-pairs rank-biserial effect (+1: always better); the
    Bayesian signed-rank P(better), P(equivalent within ±rope), P(worse); and the verdict:
    better / worse (p_holm < α), "cannot tell" when the design cannot reach α, else
    "practically equivalent" (P(equivalent) ≥ 0.95) or "no significant difference"."""
    from scipy.stats import rankdata

    if baseline is None or baseline not in wide.columns:
        return pd.DataFrame(columns=VERSUS_COLUMNS)
    others = [a for a in order if a != baseline]
    base, m, rows = wide[baseline].values, len(others), []
    for act in others:
        x = wide[act].values
        finite = np.isfinite(x) & np.isfinite(base)
        raw = x[finite] - base[finite]
        d = -raw if maximize else raw  # negative = better than the baseline from here on
        nonzero = d[d != 0]
        rk = rankdata(np.abs(nonzero))
        r = float((rk[nonzero < 0].sum() - rk[nonzero > 0].sum()) / rk.sum()) if len(nonzero) else 0.0
        diff, low, high = t_ci(raw)
        better, same, worse = evidence.bayes_signed_rank(d, rope) if len(d) else (np.nan,) * 3
        rows.append({"activation": act, "n_blocks": int(finite.sum()), "diff": diff,
                     "diff_low": low, "diff_high": high, "effect_r": r,
                     "p": evidence.signed_rank_p(d), "min_p": evidence.min_signed_rank_p(len(nonzero), m),
                     "needs_blocks": evidence.pairs_needed(m, alpha),
                     "p_better": better, "p_equivalent": same, "p_worse": worse})
    versus = pd.DataFrame(rows)
    versus["p_holm"] = holm(versus["p"])
    versus["decidable"] = versus["min_p"] <= alpha
    versus["verdict"] = [_verdict(row, alpha) for _, row in versus.iterrows()]
    return versus[VERSUS_COLUMNS]


def _verdict(row, alpha: float) -> str:
    if row["p_holm"] < alpha:
        return "better" if row["effect_r"] > 0 else "worse"
    if not row["decidable"]:
        return f"cannot tell with {row['n_blocks']} blocks (needs ≥ {row['needs_blocks']})"
    if row["p_equivalent"] >= 0.95:
        return "practically equivalent"
    return "no significant difference"


def blocks_to_separate(c: Comparison, a: str, b: str, alpha: float = ALPHA) -> int | None:
    """About how many matched blocks a paired t-test would need to tell `a` from `b` at α
    (two-sided, 80% power) at the mean and spread of their observed paired differences;
    None when they never differ or do not differ on average."""
    from scipy.stats import norm

    d = (c.wide[a] - c.wide[b]).values
    d = d[np.isfinite(d)]
    if len(d) < 2 or d.std(ddof=1) == 0 or d.mean() == 0:
        return None
    z = norm.ppf(1 - alpha / 2) + norm.ppf(0.8)
    return max(evidence.pairs_needed(1, alpha), int(np.ceil((z * d.std(ddof=1) / abs(d.mean())) ** 2)) + 1)


def claims(c: Comparison, where: str = "") -> list[str]:
    """The sentences a report may state, each backed by its test; nothing else is claimed.
    A test whose design cannot reach α says so instead of "no difference"."""
    prefix = f"{where}: " if where else ""  # e.g. "At latent_dim = 2: "
    k = len(c.avg_ranks)
    out = []
    best = c.avg_ranks.index[0]
    if k >= 3 and not c.separable and not c.friedman_decidable:
        out.append(f"{prefix}cannot tell the {k} activations apart with {c.n_blocks} matched "
                   f"blocks: the Friedman test's smallest possible p is {c.friedman_min_p:.2g} "
                   f"≥ α = {c.alpha:g}; {best} has the best average rank ({c.avg_ranks.iloc[0]:.1f}).")
    elif k >= 3 and not c.separable:
        out.append(f"{prefix}no significant difference between the {k} activations "
                   f"(Friedman {p_text(c.friedman_p, c.friedman_min_p)} over {c.n_blocks} matched blocks); "
                   f"{best} has the best average rank ({c.avg_ranks.iloc[0]:.1f}) but it is not "
                   "separable from the rest.")
    elif k >= 3 and len(c.top_group) == 1:
        second = c.avg_ranks.index[1]
        out.append(f"{prefix}{best} is best (average rank {c.avg_ranks.iloc[0]:.1f}; the next, "
                   f"{second}, {c.avg_ranks.iloc[1]:.1f}; Nemenyi CD {c.cd:.1f}, "
                   f"Friedman {p_text(c.friedman_p, c.friedman_min_p)}).")
    elif k >= 3:
        others = [a for a in c.top_group if a != best]
        out.append(f"{prefix}the activations differ (Friedman {p_text(c.friedman_p, c.friedman_min_p)}), but the "
                   f"top group is not separable: {best} (average rank {c.avg_ranks.iloc[0]:.1f}) "
                   f"and {', '.join(others)} are within the Nemenyi critical difference "
                   f"({c.cd:.1f}) of each other.")
    if not c.versus.empty:
        out.append(f"{prefix}against {c.baseline} (paired Wilcoxon, Holm-corrected, α = {c.alpha:g}) — "
                   + "; ".join(_verdict_parts(c.versus)) + ".")
    return out


def _verdict_parts(versus: pd.DataFrame) -> list[str]:
    """'better: a, b', 'worse: c', 'cannot tell with 6 blocks (needs ≥ 9): d, e', …"""
    groups: dict[str, list[str]] = {}
    for act, v in zip(versus["activation"], versus["verdict"]):
        groups.setdefault(v, []).append(act)
    return [f"{v}: {', '.join(acts)}" for v, acts in groups.items()]


# ----------------------------------------------------------------------------- the tuned protocol
def expected_best(values, n: int, maximize: bool) -> tuple[float, float]:
    """The expected best of n draws with replacement from `values` (the tuning trials' scores),
    and its standard deviation: Dodge et al. (2019), "Show your work". With v sorted so that
    the best is last, P(best of n = v_(i)) = (i/N)^n − ((i−1)/N)^n."""
    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    if not maximize:
        v = v[::-1]  # best (smallest) last
    big_n = len(v)
    if big_n == 0:
        return float("nan"), float("nan")
    i = np.arange(1, big_n + 1)
    p = (i / big_n) ** n - ((i - 1) / big_n) ** n
    mean = float((p * v).sum())
    return mean, float(np.sqrt(max(0.0, (p * v**2).sum() - mean**2)))


def _verdict_of(c: Comparison) -> str:
    if len(c.avg_ranks) >= 3 and c.separable and len(c.top_group) == 1:
        return f"{c.top_group[0]} is best"
    if len(c.avg_ranks) >= 3 and c.separable:
        return f"the top group is {', '.join(sorted(c.top_group))}"
    return "no activation is separable from the rest"


def verdict(fixed: Comparison, tuned: Comparison) -> tuple[bool, str]:
    """Whether tuning changed the verdict (the separable winner or the top group), and the
    sentence that says so, with Kendall's τ between the two rankings' average ranks."""
    from scipy.stats import kendalltau

    common = [a for a in fixed.avg_ranks.index if a in tuned.avg_ranks.index]
    tau = float(kendalltau(fixed.avg_ranks[common], tuned.avg_ranks[common]).statistic) \
        if len(common) >= 2 else float("nan")
    before, after = _verdict_of(fixed), _verdict_of(tuned)
    changed = before != after
    order = (f"Kendall's τ between the fixed and the tuned ranking = {tau:.2f}; best average "
             f"rank {fixed.avg_ranks.index[0]} at fixed hyperparameters, "
             f"{tuned.avg_ranks.index[0]} tuned.")
    if changed:
        return True, (f"Tuning changed the verdict: at the study's own hyperparameters {before}; "
                      f"with each activation's own tuned hyperparameters {after}. {order}")
    return False, f"The verdict survives tuning: in both arms {before}. {order}"
