"""Statistics over seeds: bootstrap confidence intervals, per-cell summaries, and the rank tests
over matched blocks (Friedman, Nemenyi, Holm-corrected Wilcoxon). Pure functions.

Owns: how uncertainty is computed and which claims a report may make. Does not own: reading
results (tables.py) or drawing (plots.py). Seeds are repeats, never a search axis: every
interval here is over seeds. Definitions: docs/architecture.md, "Statistics".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ci(values, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean (scipy.stats.bootstrap, seeded, so a
    report rebuilt from the same store shows the same intervals). Non-finite values are left
    out; one value gives (v, nan, nan)."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) == 1:
        return mean, float("nan"), float("nan")
    ci = bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                   random_state=np.random.default_rng(seed), vectorized=True).confidence_interval
    return mean, float(ci.low), float(ci.high)


def summarize(frame: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Mean, CI and count of `metric` over seeds for each group of `by` (ok members only)."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for keys, group in ok.groupby(by, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        mean, lo, hi = bootstrap_ci(group[metric])
        rows.append({**dict(zip(by, keys)), "mean": mean, "ci_low": lo, "ci_high": hi,
                     "n": int(group[metric].notna().sum())})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


def overall_by_seed(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each activation's metric averaged over cells, one value per seed (the repeat unit).

    Only cells where the activation has a finished member for that seed count."""
    ok = frame[frame["status"] == "ok"]
    return ok.groupby(["activation", "seed"], as_index=False)[metric].mean()


def ranking(frame: pd.DataFrame, metric: str, maximize: bool) -> pd.DataFrame:
    """Activations ordered best first by their mean over cells, with a CI over seeds."""
    per_seed = overall_by_seed(frame, metric)
    table = summarize(per_seed.assign(status="ok"), metric, ["activation"])
    failed = frame.groupby("activation")["status"].apply(lambda s: int((s == "failed").sum()))
    table["failed"] = table["activation"].map(failed).fillna(0).astype(int)
    table = table.sort_values("mean", ascending=not maximize).reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


# ----------------------------------------------------------------------------- rank tests
ALPHA = 0.05


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
    cd: float
    top_group: list[str]  # activations not separable from the best (within the CD)
    versus: pd.DataFrame  # paired Wilcoxon of each activation against the baseline
    baseline: str | None
    alpha: float = ALPHA

    @property
    def separable(self) -> bool:
        return self.friedman_p < self.alpha


def compare(frame: pd.DataFrame, metric: str, cells: list[str], maximize: bool,
            baseline: str | None = "relu", alpha: float = ALPHA) -> Comparison | None:
    """Friedman test, average ranks with Nemenyi CD, and Holm-corrected paired Wilcoxon
    signed-rank tests against `baseline` (rank-biserial effect size). None with < 2 blocks
    or < 2 activations."""
    from scipy.stats import friedmanchisquare, rankdata, wilcoxon

    wide = blocks(frame, metric, cells, maximize)
    k, n = wide.shape[1], wide.shape[0]
    if k < 2 or n < 2:
        return None
    signed = -wide.values if maximize else wide.values  # smaller is better from here on
    ranks = np.vstack([rankdata(row) for row in signed])
    avg = pd.Series(ranks.mean(0), index=wide.columns).sort_values(kind="stable")
    if k >= 3:
        stat, p = friedmanchisquare(*signed.T)
        stat, p = float(stat), float(p)
        if not np.isfinite(p):  # every block tied throughout
            stat, p = 0.0, 1.0
    else:
        stat, p = float("nan"), float("nan")
    cd = nemenyi_cd(k, n, alpha)
    best = avg.iloc[0]
    top = [a for a, r in avg.items() if r - best < cd] if k >= 3 and p < alpha else list(avg.index)

    rows = []
    if baseline is not None and baseline in wide.columns:
        base = wide[baseline].values
        for act in avg.index:
            if act == baseline:
                continue
            x = wide[act].values
            finite = np.isfinite(x) & np.isfinite(base)
            d = x[finite] - base[finite]
            d = -d if maximize else d  # negative = better than the baseline
            nonzero = d[d != 0]
            if len(nonzero) == 0:
                pw, r = 1.0, 0.0
            else:
                pw = float(wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else 1.0
                rk = rankdata(np.abs(nonzero))
                r = float((rk[nonzero < 0].sum() - rk[nonzero > 0].sum()) / rk.sum())
            rows.append({"activation": act, "n_pairs": int(finite.sum()),
                         "median_diff": float(np.median(x[finite] - base[finite])) if finite.any() else np.nan,
                         "effect_r": r, "p": pw})
    versus = pd.DataFrame(rows, columns=["activation", "n_pairs", "median_diff", "effect_r", "p"])
    if not versus.empty:
        versus["p_holm"] = holm(versus["p"])
        versus["verdict"] = [
            ("better" if r > 0 else "worse") if ph < alpha else "no significant difference"
            for r, ph in zip(versus["effect_r"], versus["p_holm"])]
    return Comparison(metric, maximize, n, avg, stat, p, cd, top, versus, baseline, alpha)


def claims(c: Comparison, where: str = "") -> list[str]:
    """The sentences a report may state, each backed by its test; nothing else is claimed."""
    prefix = f"{where}: " if where else ""  # e.g. "Overall: ", "At latent_dim = 2: "
    k = len(c.avg_ranks)
    out = []
    best = c.avg_ranks.index[0]
    if k >= 3 and not c.separable:
        out.append(f"{prefix}no significant difference between the {k} activations "
                   f"(Friedman p = {c.friedman_p:.2g} over {c.n_blocks} matched blocks); "
                   f"{best} has the best average rank ({c.avg_ranks.iloc[0]:.1f}) but it is not "
                   "separable from the rest.")
    elif k >= 3 and len(c.top_group) == 1:
        second = c.avg_ranks.index[1]
        out.append(f"{prefix}{best} is best (average rank {c.avg_ranks.iloc[0]:.1f}; the next, "
                   f"{second}, {c.avg_ranks.iloc[1]:.1f}; Nemenyi CD {c.cd:.1f}, "
                   f"Friedman p = {c.friedman_p:.2g}).")
    elif k >= 3:
        others = [a for a in c.top_group if a != best]
        out.append(f"{prefix}the activations differ (Friedman p = {c.friedman_p:.2g}), but the "
                   f"top group is not separable: {best} (average rank {c.avg_ranks.iloc[0]:.1f}) "
                   f"and {', '.join(others)} are within the Nemenyi critical difference "
                   f"({c.cd:.1f}) of each other.")
    if not c.versus.empty:
        better = c.versus[c.versus["verdict"] == "better"]["activation"].tolist()
        worse = c.versus[c.versus["verdict"] == "worse"]["activation"].tolist()
        same = c.versus[c.versus["verdict"] == "no significant difference"]["activation"].tolist()
        parts = []
        if better:
            parts.append(f"better than {c.baseline}: {', '.join(better)}")
        if worse:
            parts.append(f"worse than {c.baseline}: {', '.join(worse)}")
        if same:
            parts.append(f"not significantly different from {c.baseline}: {', '.join(same)}")
        out.append(f"{prefix}paired Wilcoxon tests (Holm-corrected, α = {c.alpha:g}) — "
                   + "; ".join(parts) + ".")
    return out


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
