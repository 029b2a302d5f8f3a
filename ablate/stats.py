"""Statistics over seeds: bootstrap confidence intervals and per-cell summaries. Pure functions.

Owns: how uncertainty is computed. Does not own: reading results (tables.py) or drawing.
Seeds are repeats, never a search axis: every interval here is over seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ci(values, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean. One value gives (v, nan, nan)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) == 1:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    alpha = (1.0 - level) / 2.0
    return mean, float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


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


def overall_by_seed(frame: pd.DataFrame, metric: str, cells: list[str]) -> pd.DataFrame:
    """Each activation's metric averaged over cells, one value per seed (the repeat unit).

    Only cells where the activation has a finished member for that seed count."""
    ok = frame[frame["status"] == "ok"]
    return ok.groupby(["activation", "seed"], as_index=False)[metric].mean()


def ranking(frame: pd.DataFrame, metric: str, cells: list[str], maximize: bool) -> pd.DataFrame:
    """Activations ordered best first by their mean over cells, with a CI over seeds."""
    per_seed = overall_by_seed(frame, metric, cells)
    table = summarize(per_seed.assign(status="ok"), metric, ["activation"])
    failed = frame.groupby("activation")["status"].apply(lambda s: int((s == "failed").sum()))
    table["failed"] = table["activation"].map(failed).fillna(0).astype(int)
    table = table.sort_values("mean", ascending=not maximize).reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table
