"""The report's Disentanglement section, for the strata whose dataset has ground-truth factors
(sprites). Torch-free.

Owns: per such stratum the table of MIG, SAP and DCI per activation and kl_weight (mean and 95%
CI over seeds, test split), the per-factor table (which factors the code holds, and how far
one dimension holds each), whether β buys disentanglement (each metric's paired difference
between the highest and the lowest kl_weight over matched activation × cell × seed, exact
Wilcoxon), whether the activation changes it (the stratum's own ranking on MIG, its tests and
its interactions), the figure of the metrics against kl_weight and the latent traversals of
each activation's member with the best validation MIG; the data of each (`*_data`) apart from
its drawing (plots.py). Does not own: the metrics' definitions (training/disentanglement.py)
or the statistics' math (stats.py, evidence.py, strata.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.analysis import evidence, figures, plots, stats, strata as strata_
from ablate.analysis.document import ci, upper
from ablate.analysis.sections import each_stratum, slug
from ablate.study.metrics import DISENTANGLEMENT, METRICS, val_name

SHOWN = ("mig", "sap", "dci_disentanglement")
"""The metrics drawn against kl_weight (the table has every one)."""


def table_data(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per activation (× kl_weight when it varies): each metric's mean and 95% CI over
    seeds, as text."""
    by = ["activation", "kl_weight"] if runs["kl_weight"].nunique() > 1 else ["activation"]
    parts = {m: stats.summarize(runs, m, by).set_index(by) for m in DISENTANGLEMENT}
    index = parts["mig"].index
    rows = []
    for key in sorted(index, key=lambda k: (order.index(k[0] if by[1:] else k), k)):
        values = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, values))
        for m, t in parts.items():
            r = t.loc[key]
            row[m] = ci(r) if r["n"] > 0 and np.isfinite(r["mean"]) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def factor_data(runs: pd.DataFrame, factors: dict[str, int], order: list[str]) -> pd.DataFrame:
    """Per activation and factor: the DCI trees' mean test accuracy (which factors the code
    holds at all) and the mean MIG of that factor (how far one dimension holds it), over the
    finished members; empty when the runs carry no per-factor scores."""
    if "factor_accuracy" not in runs or not factors:
        return pd.DataFrame()
    rows = []
    for act in order:
        part = runs[(runs["activation"] == act) & (runs["status"] == "ok")]
        per = {k: [v for v in part[k] if isinstance(v, (list, tuple)) and len(v) == len(factors)]
               for k in ("factor_accuracy", "mig_per_factor")}
        if not per["factor_accuracy"]:
            continue
        acc, gap = (np.nanmean(np.asarray(per[k], dtype=float), 0) for k in ("factor_accuracy", "mig_per_factor"))
        rows += [{"activation": act, "factor": f, "values": n, "accuracy": a, "mig": g}
                 for (f, n), a, g in zip(factors.items(), acc, gap)]
    return pd.DataFrame(rows)


def factor_table(data: pd.DataFrame) -> pd.DataFrame:
    """`factor_data` as a table: one row per activation, per factor 'accuracy · MIG'."""
    cells = data.assign(v=[f"{a:.2f} · {g:.2f}" for a, g in zip(data["accuracy"], data["mig"])])
    table = cells.pivot(index="activation", columns="factor", values="v")
    names = list(dict.fromkeys(data["factor"]))
    chance = {f: 1 / n for f, n in zip(data["factor"], data["values"])}
    table = table.reindex(index=list(dict.fromkeys(data["activation"])), columns=names)
    return table.rename(columns=lambda f: f"{f} (chance {chance[f]:.2f})").reset_index()


def beta_effects(runs: pd.DataFrame, cells: list[str]) -> pd.DataFrame:
    """For each metric: the paired difference (highest − lowest kl_weight) over blocks matched
    on activation, every other cell and seed — mean, 95% t-interval, n, exact Wilcoxon p and
    the smallest p n pairs can reach. Empty when kl_weight has one value."""
    betas = sorted(runs["kl_weight"].dropna().unique())
    if len(betas) < 2:
        return pd.DataFrame()
    keys = ["activation", *[c for c in cells if c != "kl_weight"], "seed"]
    rows = []
    for m in DISENTANGLEMENT:
        wide = runs.pivot_table(index=keys, columns="kl_weight", values=m, aggfunc="first")
        d = (wide[betas[-1]] - wide[betas[0]]).dropna().values if set(betas) <= set(wide) else np.array([])
        mean, low, high = stats.t_ci(d) if len(d) else (np.nan, np.nan, np.nan)
        rows.append({"metric": m, "low_beta": betas[0], "high_beta": betas[-1], "pairs": len(d),
                     "diff": mean, "diff_low": low, "diff_high": high,
                     "p": evidence.signed_rank_p(d) if len(d) else np.nan,
                     "min_p": evidence.min_signed_rank_p(int((d != 0).sum()))})
    return pd.DataFrame(rows)


def beta_sentence(effects: pd.DataFrame) -> str:
    """Does β buy disentanglement? As far as the paired tests tell."""
    parts = []
    for _, r in effects.iterrows():
        change = f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"
        if r["min_p"] > stats.ALPHA:
            verdict = f"cannot tell with {r['pairs']} pairs (smallest possible p {r['min_p']:.2g})"
        elif r["p"] < stats.ALPHA:
            verdict = f"{'more' if r['diff'] > 0 else 'less'} (Wilcoxon p = {r['p']:.2g})"
        else:
            verdict = f"no significant change (p = {r['p']:.2g})"
        parts.append(f"{r['metric']} {change}: {verdict}")
    r0 = effects.iloc[0]
    return (f"Does β buy disentanglement? Raising kl_weight from {r0['low_beta']:g} to {r0['high_beta']:g}, "
            f"paired over {r0['pairs']} matched activation × cell × seed blocks, changes "
            + "; ".join(parts) + ".")


def traversal_members(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Each activation's member with the best validation MIG (test MIG without a validation
    split): chosen on validation, like everything that chooses."""
    by = val_name("mig") if runs[val_name("mig")].notna().any() else "mig"
    ok = runs[(runs["status"] == "ok") & runs[by].notna()]
    best = ok.sort_values(by, ascending=False).groupby("activation").head(1)
    return best.set_index("activation").reindex([a for a in order if a in set(best["activation"])]).reset_index()


def section(ctx) -> None:
    """MIG, SAP and DCI per activation and kl_weight, for each stratum on data with factors."""
    factored = [s for s in ctx.strata if "mig" in s.runs and s.ok["mig"].notna().any()]
    if not factored:
        return
    doc = ctx.doc
    doc.heading("Disentanglement")
    doc.para("On data with ground-truth factors, how far each factor is captured by one latent "
             "dimension of the code μ, as disentanglement_lib defines it: MIG (Chen et al. 2018; "
             "the gap in mutual information between the two dimensions most informative of a "
             "factor, over the factor's entropy, codes in 20 bins), SAP (Kumar et al. 2018; the "
             "gap in a one-dimension linear SVM's accuracy), and DCI (Eastwood & Williams 2018; "
             "gradient-boosted trees' importances: disentanglement — each dimension explains one "
             "factor —, completeness — each factor lies in one dimension —, and informativeness — "
             "the trees' test accuracy). 1 is perfect, 0 none; test split, mean and 95% CI over "
             "seeds.")
    for s in each_stratum(ctx, factored):
        _stratum(ctx, s)


def _stratum(ctx, s) -> None:
    doc, runs = ctx.doc, s.ok
    doc.table(table_data(runs, s.order))
    per_factor = factor_data(runs, ctx.data(s).get("factors") or {}, s.order)
    if not per_factor.empty:
        doc.para("Per factor, accuracy · MIG: the DCI trees' test accuracy in predicting the factor "
                 "from the whole code (does the code hold it at all? chance is one over its values) "
                 "and the factor's own MIG (does one dimension hold it alone?), mean over each "
                 "activation's members.")
        doc.table(factor_table(per_factor))
    effects = beta_effects(runs, s.cells)
    if not effects.empty:
        doc.para(beta_sentence(effects))
    (on_mig,) = strata_.split(s.runs, s.epochs, s.cells, "mig", True, ctx.baseline, METRICS["mig"].rope) or (None,)
    if on_mig is not None and on_mig.comparison is not None:
        doc.bullets([upper(t) for t in stats.claims(on_mig.comparison, "On MIG")]
                    + [f"On MIG: {i.sentence()}" for i in on_mig.interactions])
    tag = slug(s)
    ctx.figure(plots.disentanglement(figures.disentanglement_data(runs, SHOWN), s.order,
                                     ctx.fig_dir / f"disentanglement{tag}.png"),
               "MIG, SAP and DCI disentanglement" + (" against kl_weight" if runs["kl_weight"].notna().any()
                                                     else " per activation") + ", mean and 95% CI over seeds.")
    members = traversal_members(s.runs, s.order)
    dims = dict(zip(members["activation"], members["latent_dim"].astype(int)))
    rows = [(act, imgs, dims[act]) for act, imgs in
            figures.image_rows(ctx.out_dir / "samples", members, "traversal", s.order)]
    shape = ctx.data(s).get("image_shape")
    if rows and shape:
        originals = figures.originals(ctx.out_dir / "samples", ctx.data(s)["label"])
        original = None if originals is None else originals[0]
        ctx.figure(plots.traversals(rows, tuple(shape), ctx.fig_dir / f"traversals{tag}.png", original),
                   "Latent traversals of each activation's member with the best validation MIG (chosen "
                   "with the ground-truth factors, for display only): one row per latent dimension, "
                   "that dimension swept from its 5th to its 95th percentile over test codes, the "
                   "others at the code of the first test image (each row's first column).")
