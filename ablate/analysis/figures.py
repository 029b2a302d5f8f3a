"""The numbers of every figure: each `*_data` function returns what its renderer in plots.py
draws, as a DataFrame or plain values, so the tests check numbers, not pixels. No matplotlib.

Owns: what each figure shows — which members, which means and intervals, which order — and
reading the saved image arrays a figure tiles. Does not own: drawing (plots.py) or the
statistics behind the numbers (stats.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.analysis.stats import expected_best as expected_best_of, summarize
from ablate.study.metrics import METRICS, label, val_name


def activation_order(runs: pd.DataFrame, metric: str, maximize: bool) -> list[str]:
    ok = runs[runs["status"] == "ok"]
    means = ok.groupby("activation")[metric].mean().sort_values(ascending=not maximize)
    rest = sorted(set(runs["activation"]) - set(means.index))
    return list(means.index) + rest


def heatmap_data(runs: pd.DataFrame, metric: str, order: list[str], columns: str,
                 facet: str | None = None) -> dict:
    """Mean metric over seeds: for each value of `facet` (one panel when None), a table
    activation × `columns`."""
    by = [*([facet] if facet else []), "activation", columns]
    cells = summarize(runs, metric, by)
    out = {}
    for value, part in (cells.groupby(facet) if facet else [(None, cells)]):
        table = part.pivot(index="activation", columns=columns, values="mean")
        out[value] = table.reindex([a for a in order if a in table.index])
    return out


def heatmap_title(metric: str) -> str:
    return f"Mean {label(metric)} over seeds ({METRICS[metric].better} is better)"


def varied(runs: pd.DataFrame, axes) -> list[str]:
    """The axes among `axes` that take more than one value in `runs`."""
    return [a for a in axes if a in runs and runs[a].nunique() > 1]


def box_data(runs: pd.DataFrame, metric: str, panel: str | None = None, hue: str | None = None) -> pd.DataFrame:
    """Per-member values of the finished members (one point per seed and cell)."""
    keep = ["activation", *([panel] if panel else []), *([hue] if hue else []), "seed", metric]
    return runs.loc[runs["status"] == "ok", list(dict.fromkeys(keep))]


def curve_column(epochs: pd.DataFrame) -> str:
    """What learning curves show: the validation −ELBO, or the training loss when the study
    has no validation split (the test split is evaluated once, at the end)."""
    has = lambda c: c in epochs.columns and epochs[c].notna().any()  # noqa: E731
    return "val_nelbo" if has("val_nelbo") else "train_loss"


def curve_columns(epochs: pd.DataFrame) -> list[str]:
    """The curves a family has: a GAN's generator and discriminator losses, else `curve_column`."""
    gan = [c for c in ("train_g_loss", "train_d_loss") if c in epochs and epochs[c].notna().any()]
    return gan or [curve_column(epochs)]


def curves_data(epochs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean and 95% CI over members of `column` per activation and epoch."""
    return summarize(epochs.assign(status="ok"), column, ["activation", "epoch"])


def rate_distortion_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean rate (test KL) and distortion (test reconstruction) over seeds per activation,
    latent_dim and kl_weight, ordered by kl_weight (one line per activation)."""
    ok = runs[(runs["status"] == "ok") & runs["test_kl"].notna()]
    return (ok.groupby(["activation", "latent_dim", "kl_weight"], as_index=False)[["test_kl", "test_recon"]]
            .mean().sort_values(["activation", "latent_dim", "kl_weight"]).reset_index(drop=True))


def collapse_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Active units and mutual information: mean and CI over seeds per activation, latent_dim
    and kl_weight, in long form (column `measure`)."""
    parts = []
    for measure in ("active_units", "mutual_info"):
        s = summarize(runs, measure, ["activation", "latent_dim", "kl_weight"])
        parts.append(s.assign(measure=measure))
    return pd.concat(parts, ignore_index=True)


def disentanglement_data(runs: pd.DataFrame, metrics) -> pd.DataFrame:
    """Each disentanglement metric: mean and CI over seeds per activation and kl_weight (per
    activation for a family without one), in long form (column `measure`)."""
    by = ["activation", *(["kl_weight"] if runs["kl_weight"].notna().any() else [])]
    return pd.concat([summarize(runs, m, by).assign(measure=m) for m in metrics], ignore_index=True)


def kl_per_dim_data(runs: pd.DataFrame, metric: str, maximize: bool,
                    by_latent: bool = True) -> pd.DataFrame:
    """For each activation and latent_dim (or, without `by_latent`, each activation): the KL
    of every latent dimension (sorted, largest first) of its best member by `metric`."""
    ok = runs[(runs["status"] == "ok") & runs[metric].notna()]
    rows = []
    groups = (ok.groupby(["activation", "latent_dim"]) if by_latent else
              ((( act, None), g) for act, g in ok.groupby("activation")))
    for (act, latent), group in groups:
        best = group.sort_values(metric, ascending=not maximize).iloc[0]
        kl = best["kl_per_dim"]
        if isinstance(kl, str):  # read back from runs.csv
            kl = [float(v) for v in kl.strip("[]").split(",") if v.strip()]
        if not isinstance(kl, (list, tuple)) or not kl:
            continue
        for i, v in enumerate(sorted(kl, reverse=True)):
            rows.append({"activation": act, "latent_dim": best["latent_dim"] if latent is None else latent,
                         "panel": "all" if latent is None else latent, "kl_weight": best["kl_weight"],
                         "seed": best["seed"], "dim": i + 1, "kl": v})
    return pd.DataFrame(rows, columns=["activation", "latent_dim", "panel", "kl_weight", "seed", "dim", "kl"])


def health_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Per activation: dead-unit fraction (mean, CI over finished members) and the share of
    members that diverged."""
    dead = summarize(runs, "dead_units", ["activation"])
    failed = runs.groupby("activation")["status"].agg(
        members="size", diverged=lambda s: int((s == "failed").sum())).reset_index()
    out = failed.merge(dead[["activation", "mean", "ci_low", "ci_high"]], on="activation", how="left")
    out["divergence_rate"] = out["diverged"] / out["members"]
    return out.rename(columns={"mean": "dead_units"})


def cd_diagram_data(comparison) -> tuple[pd.Series, float, list[tuple[str, str]]]:
    """Average ranks, the critical difference, and the cliques: maximal runs of activations
    (in rank order) whose average ranks differ by less than the CD, as (first, last)."""
    ranks, cd = comparison.avg_ranks, comparison.cd
    names = list(ranks.index)
    cliques = []
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and ranks.iloc[j + 1] - ranks.iloc[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in cliques):
            cliques.append((i, j))
    return ranks, cd, [(names[a], names[b]) for a, b in cliques]


def interaction_data(slices: list[tuple[object, pd.Series]]) -> pd.DataFrame:
    """Average rank of each activation in each slice of one axis (long form)."""
    return pd.DataFrame([{"value": v, "activation": a, "avg_rank": r}
                         for v, ranks in slices for a, r in ranks.items()])


def cost_data(runs: pd.DataFrame, activation_cost: dict) -> pd.DataFrame:
    """Per activation: the measured forward + backward time of the activation itself, ns per
    element: median and its 25th and 75th percentiles over repeated samples (an older store's
    single number stands for all three)."""
    acts = sorted(set(runs["activation"]))
    def part(a, key):
        v = activation_cost.get(a, np.nan)
        return float(v.get(key, np.nan)) if isinstance(v, dict) else float(v)
    return pd.DataFrame({"activation": acts, "ns_per_element": [part(a, "median") for a in acts],
                         "q25": [part(a, "q25") for a in acts], "q75": [part(a, "q75") for a in acts]})


# ----------------------------------------------------------------------------- images
def chosen_by(runs: pd.DataFrame, metric: str) -> str:
    """The column that picks the showcased members: the metric's validation twin when the runs
    have it (anything that chooses reads validation; test is only reported), else the metric."""
    twin = val_name(metric)
    return twin if twin in runs and runs[twin].notna().any() else metric


def showcase_members(runs: pd.DataFrame, metric: str, maximize: bool,
                     cells: list[str]) -> tuple[dict, pd.DataFrame]:
    """The members whose images a report shows: the best activation's best cell, and in it
    each activation's best seed, by `chosen_by(runs, metric)`. Returns (the cell, one row per
    activation)."""
    metric = chosen_by(runs, metric)
    ok = runs[(runs["status"] == "ok") & runs[metric].notna()]
    if ok.empty:
        return {}, ok
    means = ok.groupby(["activation", *cells])[metric].mean().reset_index()
    top = means.sort_values(metric, ascending=not maximize).iloc[0]
    cell = {c: top[c] for c in cells}
    in_cell = ok[np.logical_and.reduce([ok[c] == v for c, v in cell.items()])] if cells else ok
    best = in_cell.sort_values(metric, ascending=not maximize).groupby("activation").head(1)
    return cell, best


def load_images(samples: Path, trial: int, seed: int) -> dict[str, np.ndarray]:
    path = samples / f"t{int(trial)}.npz"
    if not path.exists():
        return {}
    with np.load(path) as z:
        prefix = f"s{int(seed)}_"
        return {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}


def originals(samples: Path, label: str) -> np.ndarray | None:
    """The first test images of dataset `label` that every member reconstructs (uint8 rows),
    or None when the run kept none."""
    path = samples / f"originals-{label}.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        return z["recon"]


def image_rows(samples: Path, members: pd.DataFrame, kind: str, order: list[str]) -> list[tuple[str, np.ndarray]]:
    """(activation, images) for each showcased member that has `kind` images, in `order`."""
    rows = []
    by_act = {r["activation"]: r for _, r in members.iterrows()}
    for act in order:
        if act in by_act:
            imgs = load_images(samples, by_act[act]["trial"], by_act[act]["seed"]).get(kind)
            if imgs is not None:
                rows.append((act, imgs))
    return rows


def manifold_side(rows: list[tuple[str, np.ndarray]]) -> int:
    """Images per side of the decoded latent grid (the saved arrays hold side² images)."""
    return int(round(math.sqrt(len(rows[0][1]))))


def history_data(trials: pd.DataFrame, objective: str, maximize: bool) -> pd.DataFrame:
    """Trials in the order they were asked, with the best complete objective so far."""
    data = trials.sort_values("trial").reset_index(drop=True)
    done = data[objective].where(data["state"] == "complete")
    best = done.cummax() if maximize else done.cummin()
    return data.assign(best_so_far=best.ffill())


def slices_data(trials: pd.DataFrame, objective: str, param: str) -> pd.DataFrame:
    """Complete trials: one point per trial of (param, objective, activation)."""
    done = trials[(trials["state"] == "complete") & trials[objective].notna()]
    return done[["trial", "activation", param, objective]].reset_index(drop=True)


# ------------------------------------------------------------------------------ the tuned protocol
def expected_best_data(tuning: pd.DataFrame, objective: str, maximize: bool,
                       cells: list[str]) -> pd.DataFrame:
    """For each activation and cell: the expected best validation score after n = 1 … N tuning
    trials (N = the trials that finished with a score), ± one standard deviation, clipped to the
    scores seen."""
    rows = []
    done = tuning.dropna(subset=[objective])
    for keys, part in done.groupby(["activation", *cells], sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        values = part[objective].to_numpy()
        panel = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                          for k, v in zip(cells, keys[1:])) or "all"
        for n in range(1, len(values) + 1):
            mean, std = expected_best_of(values, n, maximize)
            rows.append({"activation": keys[0], "panel": panel, "n": n, "mean": mean,
                         "low": max(mean - std, values.min()), "high": min(mean + std, values.max())})
    return pd.DataFrame(rows, columns=["activation", "panel", "n", "mean", "low", "high"])
