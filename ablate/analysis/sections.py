"""The report's sections, each a function of the report's `Context` that writes into its document.

Owns: the wording, tables and figure captions of the summary, setup (with the weight init each
activation got, per arm), results, statistics,
collapse, images, cost, per-cell, failures and reproduce sections. Does not own: which
sections a report has (report.py), a search's sections (search.py), the statistics
(stats.py) or how figures look (plots.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ablate.activations import ACTIVATIONS
from ablate.analysis import plots, protocol, stats
from ablate.analysis.document import ci, fmt, upper, where
from ablate.metrics import METRICS, label
from ablate.quality import QUALITY_SAMPLES
from ablate.study import ARMS

if TYPE_CHECKING:
    from ablate.analysis.report import Context


def grid_summary(ctx: Context) -> None:
    """A grid's summary: what finished, the means, and the claims the matched tests allow."""
    doc, runs, metric = ctx.doc, ctx.runs, ctx.metric
    doc.heading("Summary")
    total = len(ctx.study.points()) * len(ctx.study.seeds) * (2 if ctx.study.protocol else 1)
    n_failed = int((runs["status"] == "failed").sum())
    doc.para(f"{len(runs)} of {total} members finished ({len(ctx.ok)} trained to the end, "
             f"{n_failed} failed). Metric: {label(metric)}, {METRICS[metric].better} is better, "
             f"{split_of(ctx, metric)}; intervals are 95% bootstrap confidence intervals over "
             "seeds; tests are paired over matched blocks (one block = one cell and seed, where "
             "every activation saw the same data order and noise) at α = "
             f"{stats.ALPHA:g}.")
    failure_reasons(ctx)
    if ctx.ranking is not None:
        rank = ctx.ranking
        best = rank.iloc[0]
        sentence = (f"{'Highest' if ctx.maximize else 'Lowest'} mean over all cells"
                    f"{' (both arms)' if ctx.study.protocol else ''}: "
                    f"{best['activation']}, {ci(best)}")
        if ctx.baseline and ctx.baseline != best["activation"] and ctx.baseline in set(rank["activation"]):
            b = rank[rank["activation"] == ctx.baseline].iloc[0]
            sentence += f"; the baseline {ctx.baseline}: {ci(b)}"
        doc.para(sentence + ". Means weigh large differences; the tests below count which "
                 "activation wins in each matched block.")
    if ctx.study.protocol and (sentence := protocol.verdict_sentence(ctx)):
        doc.para(f"Does the verdict survive tuning? {sentence} (Both arms on the test split; "
                 "each activation was tuned on the validation split.)")
    if ctx.comparison is not None:
        doc.bullets([upper(s) for s in stats.claims(ctx.comparison, "Overall")])
        axis_claims = [t for axis, v, c in ctx.per_axis
                       for t in stats.claims(c, "At " + where(axis, v))[:1]]
        if axis_claims:
            doc.para("Does the answer change along the axes? The same tests within each value:")
            doc.bullets(axis_claims)
    elif len(ctx.ok):  # (with none, failure_reasons said why)
        doc.para("Too few finished members for a statistical comparison (at least two "
                 "activations with two matched blocks are needed).")


def failure_reasons(ctx: Context) -> None:
    """When no member trained to the end, say so and why: each distinct reason (epoch
    numbers aside) with how many members and which activations it stopped."""
    runs = ctx.runs
    if runs.empty or len(ctx.ok):
        return
    why = runs.assign(why=runs["reason"].fillna("").astype(str)
                      .str.replace(r"\d+", "N", regex=True).replace("", "no reason recorded"))
    items = [f"{n} member{'s' if n > 1 else ''} ({', '.join(sorted(set(g['activation'])))}): {reason}"
             for reason, g in why.groupby("why", sort=False) for n in [len(g)]]
    doc = ctx.doc
    doc.para(f"No member trained to the end: all {len(runs)} failed or were pruned, so there is "
             "nothing to rank. The reasons (N stands for an epoch or step number):")
    doc.bullets(sorted(items, key=lambda t: -int(t.split(" ", 1)[0])))


def split_of(ctx: Context, metric: str) -> str:
    """Which data a metric's numbers come from, as a clause of a sentence."""
    data, split = ctx.info.get("data", {}), METRICS[metric].split
    if split == "test":
        return f"measured once, at the end, on the test split ({data.get('n_test', '?')} images), which nothing chose by"
    if split == "validation":
        return f"measured on the validation split ({data.get('n_val', '?')} images)"
    return "a cost, not a split's measurement" if split == "none" else f"on the {split} split"


def setup(ctx: Context) -> None:
    """Dataset sizes, device, seeds, wall time, package versions and the YAML as written."""
    doc, info, study = ctx.doc, ctx.info, ctx.study
    doc.heading("Setup")
    data, env, wall = info.get("data", {}), info.get("environment", {}), info.get("wall_seconds")
    val = f"{data['n_val']} validation and " if data.get("n_val") else "no validation and "
    shape = data.get("image_shape")
    pixels = f"{'×'.join(map(str, shape))} = {data.get('dim')}" if shape else data.get("dim", "?")
    doc.para(f"Dataset {study.dataset['name']}: {data.get('n_train', '?')} training, "
             f"{val if 'n_val' in data else ''}{data.get('n_test', '?')} test images of "
             f"{pixels} pixels. {model_sentence(study)} "
             f"Device: {info.get('device', '?')}. Seeds: {', '.join(map(str, study.seeds))}. "
             + (f"Wall time of the study: {wall / 60:.1f} min." if wall else ""))
    if env:
        doc.table(pd.DataFrame({"component": list(env), "version": list(env.values())}))
    if not ctx.runs.empty:
        doc.para("The weight initialisation of each activation's hidden layers"
                 + (" in each arm" if ctx.study.protocol else "") + " (auto: the scheme the "
                 "activation needs, Kaiming for the ReLU family, LeCun for SELU, Xavier for "
                 "tanh and sigmoid; default: PyTorch's own nn.Linear, nn.Conv2d init):")
        doc.table(inits(ctx))
    if overrides := info.get("overrides"):
        doc.para("Values set on the command line over the study file's (the YAML below is "
                 "the file with them applied): " + ", ".join(f"`--set {o}`" for o in overrides) + ".")
    doc.code(study.source)


def model_sentence(study) -> str:
    """The architecture in words: each arch the study trains, its layers, and the likelihood."""
    values = lambda key: study.space.get(key, (getattr(study.base, key),))  # noqa: E731
    sizes = lambda vs: " or ".join("[" + ", ".join(map(str, v)) + "]" for v in vs)  # noqa: E731
    parts = []
    for arch in values("arch"):
        hidden = values("hidden")
        fc = ("no fully connected hidden layer" if hidden == ((),)
              else f"fully connected hidden layers {sizes(hidden)}")
        if arch == "conv":
            parts.append(f"conv (4×4 stride-2 convolutions with channels {sizes(values('channels'))}, "
                         f"{fc}, transposed convolutions back)")
        else:
            parts.append(f"mlp ({fc})")
    families = "/".join(f.upper() for f in values("family"))
    return (f"Model: {families}, {' and '.join(parts)}, "
            f"{'/'.join(values('likelihood'))} likelihood.")


def inits(ctx: Context) -> pd.DataFrame:
    """The weight init each activation's hidden layers got, per arm (auto resolved to the
    activation's own scheme)."""
    def resolved(act: str, init: str) -> str:
        if init != "auto":
            return init
        schemes = [ACTIVATIONS.get(a).init if a in ACTIVATIONS else "the plugin's own"
                   for a in act.split("→")]  # an encoder→decoder pair: each side its own
        return f"auto ({' → '.join(schemes)})"

    arms = ARMS if "arm" in ctx.runs.columns else (None,)
    out = {"activation": ctx.order or sorted(set(ctx.runs["activation"]))}
    for arm in arms:
        part = ctx.runs if arm is None else ctx.runs[ctx.runs["arm"] == arm]
        used = part.groupby("activation")["init"].agg(lambda s: sorted(set(s)))
        out["init" if arm is None else f"{arm}: init"] = [
            ", ".join(resolved(a, i) for i in used.get(a, [])) or "–" for a in out["activation"]]
    return pd.DataFrame(out)


def results(ctx: Context) -> None:
    """The ranking table and the figures of the metric across the grid's axes."""
    if ctx.ranking is None:
        return
    doc, metric, c, order, figs = ctx.doc, ctx.metric, ctx.comparison, ctx.order, ctx.fig_dir
    doc.heading("Results")
    view = ctx.ranking.assign(**{metric: ctx.ranking.apply(ci, axis=1)})
    if c is not None:
        view["avg_rank"] = view["activation"].map(c.avg_ranks).map(lambda v: f"{v:.2f}")
    cols = ["rank", "activation", metric] + (["avg_rank"] if c is not None else []) + ["n", "failed"]
    doc.para("Each activation's metric averaged over every cell, then mean and 95% CI over "
             "seeds; avg_rank is its average rank within matched blocks (1 = best).")
    doc.table(view[cols].rename(columns={"n": "seeds"}))
    # the tuned protocol: arms apart; several families: families apart (kl_weight is a vae's)
    split = ("arm" if ctx.study.protocol else "family"
             if ctx.runs["family"].nunique() > 1 or ctx.runs["kl_weight"].isna().all() else "kl_weight")
    ctx.figure(plots.boxes(ctx.runs, metric, order, figs / "ranking.png", hue=split),
               f"{label(metric)} of every member (box over cells and seeds, points "
               f"coloured by {split}), activations ordered by mean, one panel per latent_dim.")
    ctx.figure(plots.heatmaps(ctx.runs, metric, order, figs / "heatmap.png", facet=split),
               f"Mean {label(metric)} per activation and latent_dim, one panel per {split}.")
    if not ctx.epochs.empty:
        ctx.figure(plots.curves(ctx.epochs, order, figs / "curves.png"),
                   f"{upper(label(plots.curve_column(ctx.epochs)))} per epoch, mean over "
                   "cells and seeds with a 95% CI band.")
    if ctx.runs["test_kl"].notna().any():
        ctx.figure(plots.rate_distortion(ctx.runs, order, figs / "rate_distortion.png"),
                   "Rate–distortion plane (Alemi et al. 2018): mean test KL (rate) against mean "
                   "test reconstruction (distortion) per kl_weight. Models on one dotted line "
                   "have equal −ELBO but trade rate for distortion differently.")


def statistics(ctx: Context) -> None:
    """Friedman test and CD diagram, Wilcoxon tests against the baseline, and per axis value."""
    c, doc = ctx.comparison, ctx.doc
    if c is None:
        return
    doc.heading("Statistics")
    if len(c.avg_ranks) >= 3:
        doc.para(f"Friedman test over {c.n_blocks} matched blocks and {len(c.avg_ranks)} "
                 f"activations: χ² = {c.friedman_stat:.1f}, p = {c.friedman_p:.2g}. Nemenyi "
                 f"critical difference of average ranks: {c.cd:.2f}. Top group (not separable "
                 f"from the best): {', '.join(c.top_group)}.")
        ctx.figure(plots.cd_diagram(c, ctx.fig_dir / "cd_diagram.png"),
                   "Critical difference diagram: average ranks over matched blocks; a bar "
                   "joins activations whose ranks differ by less than the Nemenyi CD.")
    if not c.versus.empty:
        v = c.versus
        doc.para(f"Each activation against the baseline {ctx.baseline}: paired Wilcoxon "
                 "signed-rank test over matched blocks, Holm-corrected across activations. "
                 f"median_diff is the median of (activation − {ctx.baseline}) in {label(ctx.metric)}; "
                 "effect_r is the matched-pairs rank-biserial correlation, from −1 (always worse) "
                 "to +1 (always better).")
        doc.table(pd.DataFrame({
            "activation": v["activation"], "pairs": v["n_pairs"],
            "median_diff": v["median_diff"].map(lambda x: fmt(x, 3)),
            "effect_r": v["effect_r"].map(lambda x: f"{x:+.2f}"),
            "p": v["p"].map(lambda x: f"{x:.2g}"), "p_holm": v["p_holm"].map(lambda x: f"{x:.2g}"),
            "verdict": v["verdict"]}))
    if ctx.per_axis:
        doc.heading("Per axis", 3)
        doc.table(pd.DataFrame([_axis_row(ctx.baseline, axis, val, c) for axis, val, c in ctx.per_axis]))


def _axis_row(baseline: str | None, axis: str, value, c: stats.Comparison) -> dict:
    def verdicts(verdict: str) -> str:
        names = [] if c.versus.empty else list(c.versus.loc[c.versus["verdict"] == verdict, "activation"])
        return ", ".join(names) or "–"

    return {"slice": where(axis, value), "blocks": c.n_blocks,
            "friedman_p": f"{c.friedman_p:.2g}" if math.isfinite(c.friedman_p) else "–",
            "best (avg rank)": f"{c.avg_ranks.index[0]} ({c.avg_ranks.iloc[0]:.2f})",
            "top group": ", ".join(c.top_group),
            f"better than {baseline}": verdicts("better"), f"worse than {baseline}": verdicts("worse")}


QUALITY = ("fid", "kid", "precision", "recall", "class_coverage")


def sample_quality(ctx: Context) -> None:
    """FID, KID, precision / recall and class coverage of each activation's samples, in the
    feature space of the dataset's classifier."""
    runs = ctx.ok
    if runs.empty or not (runs["family"].isin(METRICS["fid"].families)).any():
        return
    doc = ctx.doc
    doc.heading("Sample quality")
    judge = ctx.info.get("classifier")
    if not judge or "fid" not in runs or runs["fid"].isna().all():
        doc.para("The dataset has no labels, so there is no classifier to measure samples with: "
                 "the fid, kid, precision, recall and class_coverage columns are empty.")
        return
    n = min(ctx.info.get("data", {}).get("n_test", 0), QUALITY_SAMPLES)
    doc.para(f"Prior samples (decoded means) against the test images, {n} of each for every "
             "member, in the penultimate features of a classifier trained once on the training "
             f"split (test accuracy {judge['test_accuracy']:.1%}, {judge['classes']} classes). FID "
             "and KID (unbiased, cubic kernel): lower is better; FID depends on the sample count, "
             "and every member here is scored at the same count. Precision and recall (k = 3, "
             "Kynkäänniemi et al. 2019): the share of samples on the data's manifold and of data "
             "on the samples'; class coverage: the share of classes found among the samples "
             "(1/classes for a collapsed generator). Mean and 95% CI over seeds of each "
             "activation's mean over cells.")
    doc.table(activation_cis(runs, QUALITY, [a for a in ctx.order if a in set(runs["activation"])]))


def activation_cis(runs: pd.DataFrame, metrics, order: list[str]) -> pd.DataFrame:
    """One row per activation in `order`: each metric's mean and 95% CI over seeds of the
    activation's mean over cells (the ranking's numbers, `stats.ranking`); – without any."""
    table = {"activation": order}
    for metric in metrics:
        r = stats.ranking(runs, metric, METRICS[metric].higher_is_better).set_index("activation")
        table[metric] = [ci(r.loc[a]) if a in r.index and r.loc[a, "n"] > 0 else "–" for a in order]
    return pd.DataFrame(table)


def collapse(ctx: Context) -> None:
    """Active units and I(x; z) against kl_weight, KL per latent dimension, dead units and
    divergence, with a table of them per activation."""
    if ctx.health is None or (ctx.runs["family"] == "gan").all():  # a GAN has no code to collapse
        return
    doc, runs, order, figs = ctx.doc, ctx.runs, ctx.order, ctx.fig_dir
    grid = ctx.study.search.is_grid  # a search's members sit at scattered kl_weights and sizes
    doc.heading("Posterior collapse and dead units")
    if grid and runs["active_units"].notna().any() and runs["mutual_info"].notna().any():
        ctx.figure(plots.collapse(runs, order, figs / "collapse.png"),
                   "Active units (Var_x E[z_d|x] ≥ 0.01) and mutual information I(x; z) "
                   "against kl_weight; fewer active units and less information = collapse.")
    if "kl_per_dim" in runs.columns and runs["test_kl"].notna().any():
        ctx.figure(plots.kl_per_dim(runs, ctx.metric, ctx.maximize, order, figs / "kl_per_dim.png",
                                    by_latent=grid),
                   "KL of each latent dimension, sorted, for the best member of each "
                   "activation; dimensions under the dotted line (0.01 nats) carry almost "
                   "nothing.")
    ctx.figure(plots.health(ctx.health, order, figs / "dead_units.png"),
               "Fraction of hidden units that are constant over the test set (dead; in a conv "
               "layer a unit is a channel, constant over every image and position), and "
               "share of members that diverged, per activation.")
    h = ctx.health.set_index("activation").reindex(order).reset_index()
    au = stats.summarize(runs, "active_units", ["activation"]).set_index("activation")
    mi = stats.summarize(runs, "mutual_info", ["activation"]).set_index("activation")
    doc.table(pd.DataFrame({
        "activation": h["activation"],
        "active_units": [ci(au.loc[a]) if a in au.index else "–" for a in h["activation"]],
        "mutual_info": [ci(mi.loc[a]) if a in mi.index else "–" for a in h["activation"]],
        "dead_units": [fmt(x, 3) for x in h["dead_units"]],
        "diverged": [f"{d}/{m}" for d, m in zip(h["diverged"], h["members"])]}))


def images(ctx: Context) -> None:
    """Reconstructions, prior samples and (latent_dim 2) the latent manifold of each
    activation's best seed in the best cell."""
    shape, samples = ctx.info.get("data", {}).get("image_shape"), ctx.out_dir / "samples"
    if ctx.health is None or not shape or not samples.exists():
        return
    shape = tuple(shape) if len(shape) == 3 else (1, *shape)  # (C, H, W); stores before it was (H, W)
    order, figs = ctx.order, ctx.fig_dir
    cell, members = plots.showcase_members(ctx.runs, ctx.metric, ctx.maximize, ctx.cells)
    at = ", ".join(where(k, v) for k, v in cell.items()) or "each activation's best configuration"
    ctx.doc.heading("Images")
    rows = plots.image_rows(samples, members, "recon", order)
    if rows and (samples / "originals.npz").exists():
        with np.load(samples / "originals.npz") as z:
            originals = z["recon"]
        ctx.figure(plots.image_table(rows, shape, f"Reconstructions at {at}",
                                     figs / "reconstructions.png", originals),
                   f"Reconstructions (decoded posterior mean) of the first test images "
                   f"by each activation's best seed at {at}; top row: the originals.")
    rows = plots.image_rows(samples, members, "prior", order)
    if rows:
        ctx.figure(plots.image_table(rows, shape, f"Prior samples at {at}", figs / "samples.png"),
                   "Decoded means of draws z ~ N(0, I), same members.")
    if 2 in set(ctx.runs["latent_dim"]):
        cell2, members2 = plots.showcase_members(ctx.runs[ctx.runs["latent_dim"] == 2], ctx.metric,
                                                 ctx.maximize, ctx.cells)
        rows = plots.image_rows(samples, members2, "manifold", order)
        if rows:
            at2 = (", ".join(where(k, v) for k, v in cell2.items())
                   or "latent_dim = 2, each activation's best configuration")
            side = plots.manifold_side(rows)
            ctx.figure(plots.manifolds(rows, shape, f"Latent manifolds at {at2}", figs / "manifold.png"),
                       f"Decoded latent manifold of each activation's best seed at {at2}: z on a "
                       f"{side}×{side} grid of the prior's 5%–95% quantiles.")


def cost(ctx: Context) -> None:
    """Member-seconds, and the measured cost of each activation itself."""
    if ctx.cost is None:
        return
    doc, act_ns, wall = ctx.doc, ctx.info.get("activation_cost", {}), ctx.info.get("wall_seconds")
    doc.heading("Cost")
    doc.para("Members of a cohort train together, so a member's train seconds are its share "
             "of its cohort's wall time by parameter count: it tells what a configuration "
             "costs, not what an activation costs. What differs between activations is the "
             "activation itself, measured before training on the same device. Total: "
             f"{ctx.runs['train_seconds'].sum():.0f} member-seconds"
             + (f" in the final arms and {ctx.tuning['train_seconds'].sum():.0f} in the tuning"
                if "train_seconds" in ctx.tuning else "")
             + (f"{',' if 'train_seconds' in ctx.tuning else ''} in {wall:.0f} s of wall time."
                if wall else "."))
    if act_ns:
        ctx.figure(plots.cost(ctx.cost, ctx.order, ctx.fig_dir / "cost.png"),
                   "Forward + backward time of each activation per element (best of 5 on "
                   "4 M elements).")
    c = ctx.cost.set_index("activation").reindex(ctx.order).reset_index()
    doc.table(pd.DataFrame({"activation": c["activation"],
                            "train seconds per member": [fmt(v, 3) for v in c["train_seconds"]],
                            "activation ns/element": [fmt(v, 2) for v in c["ns_per_element"]]}))


def per_cell(ctx: Context) -> None:
    """Mean [CI] of the metric for every cell and activation."""
    if ctx.ranking is None:
        return
    cells, metric = ctx.cells, ctx.metric
    ctx.doc.heading("Per cell")
    table = stats.summarize(ctx.runs, metric, [*cells, "activation"])
    table = table.sort_values([*cells, "mean"], ascending=[True] * len(cells) + [not ctx.maximize])
    view = table.assign(**{metric: table.apply(ci, axis=1)})[[*cells, "activation", metric, "n"]]
    ctx.doc.table(view.rename(columns={"n": "seeds"}))


def failures(ctx: Context) -> None:
    """Every member that failed: when and why."""
    ctx.doc.heading("Failures")
    failed = ctx.runs[ctx.runs["status"] == "failed"]
    if failed.empty:
        ctx.doc.para("No member failed." + ("" if ctx.study.search.is_grid else
                                            " Pruned members are counted in the Search section."))
        return
    keys = [k for k in [*ctx.study.space, *ctx.study.ranges] if k != "activation"]
    ctx.doc.table(failed[["trial", "activation", *keys, "seed", "status", "fail_epoch", "reason"]].assign(
        fail_epoch=lambda f: f["fail_epoch"].map(lambda v: "–" if pd.isna(v) else int(v))))


def reproduce(ctx: Context) -> None:
    ctx.doc.heading("Reproduce")
    ctx.doc.para(f"make study STUDY={ctx.study.path}   (or: ablate run {ctx.study.path}); "
                 f"ablate report {ctx.out_dir} rebuilds this report from the store without training.")
