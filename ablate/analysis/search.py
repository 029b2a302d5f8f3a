"""A search study's sections: what the sampler found, how, and what pruning saved.

A search gives activations unequal numbers of trials at different settings, so there are no
matched blocks to test: these sections show the best configurations found (with CIs over
seeds), never a paired comparison.

Owns: the search summary, the Search section (history, importances, slices, curves, best
configurations, pruning, every trial). Does not own: the sections a search shares with a grid
(sections.py) or which sections a report has (report.py).
"""

from __future__ import annotations

import pandas as pd

from ablate.analysis import figures, plots, sections
from ablate.analysis.context import Context
from ablate.analysis.document import ci, fmt, param, upper
from ablate.analysis.edges import edge_hits, edge_sentence
from ablate.study.metrics import label, twin_on_test


def _keys(ctx: Context) -> list[str]:
    """The searched keys: categorical axes and ranges."""
    return [*ctx.study.space, *ctx.study.ranges]


def _ranked(ctx: Context) -> pd.DataFrame:
    """Complete trials with an objective, best first."""
    objective = ctx.study.search.objective
    done = ctx.trials[ctx.trials["state"] == "complete"].dropna(subset=[objective])
    return done.sort_values(objective, ascending=ctx.study.search.direction != "maximize")


def _trial_view(frame: pd.DataFrame, keys: list[str], objective: str) -> pd.DataFrame:
    """trial, its parameters and its objective as mean [95% CI] over seeds."""
    return pd.DataFrame({
        "trial": frame["trial"].values,
        **{k: [param(v) for v in frame[k]] for k in keys},
        objective: [ci(r.rename({objective: "mean"})) for _, r in frame.iterrows()]})


def _pruning(ctx: Context) -> tuple[int, int, int, float]:
    """(pruned trials, member-epochs run, member-epochs a full run of every trial would take,
    share saved)."""
    ran = int(ctx.runs["epochs_run"].fillna(0).sum())
    full = int(ctx.runs["epochs"].sum())
    return int((ctx.trials["state"] == "pruned").sum()), ran, full, (1 - ran / full) if full else 0.0


def summary(ctx: Context) -> None:
    """Trials by state, the best configuration with its seed CI, and the best found for each
    activation, said as what it is (not a matched comparison)."""
    doc, study, trials = ctx.doc, ctx.study, ctx.trials
    s, objective = study.search, study.search.objective
    reported = twin_on_test(objective)
    doc.heading("Summary")
    counts = trials["state"].value_counts()
    pruned, ran, full, saved = _pruning(ctx)
    doc.para(f"{len(trials)} of {s.n_trials} trials finished ({counts.get('complete', 0)} complete, "
             f"{pruned} pruned, {counts.get('failed', 0)} failed), chosen by {s.strategy} "
             f"(sampler_seed {s.sampler_seed}), each trained with {len(study.seeds)} seeds. "
             f"Objective: {label(objective)}, mean over a trial's seeds, {s.direction}d; the "
             "sampler and the pruner read only the validation split"
             + (f", and each configuration's {reported} beside it is measured once on the test "
                "split, never used to choose. " if reported != objective else ". ")
             + f"Pruner: {s.pruner}"
             + (f"; it stopped {pruned} trials early, so {ran} of {full} member-epochs were "
                f"trained ({saved:.0%} saved)." if s.pruner != "none" else "."))
    sections.failure_reasons(ctx)
    done = _ranked(ctx)
    if done.empty:
        doc.para("No trial completed yet.")
        return
    best = done.iloc[0]
    params = ", ".join(f"{k} {param(best[k])}" for k in _keys(ctx))
    items = [f"Best configuration found (trial {best['trial']}): {params}; "
             f"{objective} {ci(best.rename({objective: 'mean'}))} over {best['seeds_ok']} seeds"
             + (f"; {reported} {fmt(best[reported])}." if reported != objective else ".")]
    per_act = done.groupby("activation", sort=False).head(1)
    if len(per_act) > 1:
        items.append("Best per activation: " + "; ".join(
            f"{r['activation']} {r[objective]:.2f}" for _, r in per_act.iterrows()) + ".")
    doc.bullets(items + [edge_sentence(k, side, r, f"the search ({param(float(best[k]))})")
                         for k, side, r in edge_hits({k: best[k] for k in study.ranges}, study.ranges)])
    doc.para("A search spends its trials where its sampler expects gains, so activations get "
             "unequal numbers of trials at different settings: these are the best "
             "configurations found, not a matched test. For a paired comparison, run a grid "
             "around the best settings (search.strategy: grid).")


def search(ctx: Context) -> None:
    """Optimization history, parameter importances, slices, learning curves, then the best
    configurations, pruning and every trial."""
    if ctx.trials.empty:
        return
    ctx.doc.heading("Search")
    _figures(ctx)
    _best(ctx)
    _pruning_section(ctx)
    _all_trials(ctx)


def _figures(ctx: Context) -> None:
    import optuna

    s, trials, figs = ctx.study.search, ctx.trials, ctx.fig_dir
    objective, maximize = s.objective, s.direction == "maximize"
    order = ctx.order or sorted(set(trials["activation"]))
    ctx.figure(plots.history(trials, objective, maximize, order, figs / "history.png"),
               "Optimization history: each complete trial's objective (mean over seeds), "
               "coloured by activation; crosses are pruned trials at the last per-epoch value "
               "the pruner saw; the line is the best so far.")
    done = _ranked(ctx)
    varied = [k for k in _keys(ctx) if done[k].nunique() > 1]
    if len(done) >= 4 and varied:
        imp = optuna.importance.get_param_importances(
            ctx.store, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=varied)
        ctx.figure(plots.importances(imp, figs / "importances.png"),
                   "Parameter importances (fANOVA, Hutter et al. 2014: the share of the "
                   "objective's variance over complete trials that each parameter explains, "
                   "from a random forest fitted to them).")
    ranges = {k: r.log for k, r in ctx.study.ranges.items()}
    if ranges:
        ctx.figure(plots.slices(trials, objective, maximize, ranges, order, figs / "slices.png"),
                   "The objective of every complete trial against each searched range, "
                   "coloured by activation.")
    if not ctx.epochs.empty:
        ctx.figure(plots.curves(ctx.epochs, order, figs / "curves.png",
                                "Learning curves: mean over trials and seeds, 95% CI band"),
                   f"{upper(label(figures.curve_column(ctx.epochs)))} per epoch, mean over "
                   "every trial and seed of each activation, with a 95% CI band; pruned trials' "
                   "curves end early.")


def _best(ctx: Context) -> None:
    """The ten best complete trials, and each activation's best (or that it has none)."""
    done, doc, objective = _ranked(ctx), ctx.doc, ctx.study.search.objective
    if done.empty:
        return
    keys, others_keys = _keys(ctx), [k for k in _keys(ctx) if k != "activation"]
    doc.heading("Best configurations", 3)
    top = done.head(10)
    reported = twin_on_test(objective)
    doc.para(f"The ten best complete trials by mean {label(objective)} over seeds, "
             "with a 95% Student-t interval over the seeds"
             + (f"; {reported} is the same members' mean on the test split." if reported != objective else "."))
    view = _trial_view(top, keys, objective).assign(seeds=top["seeds_ok"].values)
    if reported != objective:
        view[reported] = [fmt(v) for v in top[reported]]
    doc.table(view)
    best = done.groupby("activation").head(1)
    others = sorted(set(ctx.study.activations()) - set(best["activation"]))
    view = _trial_view(best, others_keys, objective)
    view = pd.concat([  # object columns: the rows without a trial must not turn ints into floats
        view.rename(columns={"trial": "best trial"}).assign(activation=best["activation"].values).astype(object),
        pd.DataFrame({"activation": others, objective: "no complete trial"}, dtype=object)])
    counts = ctx.trials.groupby("activation")["state"].agg(
        trials="size", pruned=lambda x: int((x == "pruned").sum()))
    counts = counts.reindex(view["activation"]).fillna(0).astype(int)
    view = view.assign(trials=counts["trials"].values, pruned=counts["pruned"].values)
    doc.heading("Best per activation", 3)
    doc.para("Each activation's best complete trial, and how many trials the sampler gave it.")
    doc.table(view[["activation", "trials", "pruned", "best trial", *others_keys, objective]].fillna("–"))


def _pruning_section(ctx: Context) -> None:
    s, doc, trials = ctx.study.search, ctx.doc, ctx.trials
    pruned, ran, full, saved = _pruning(ctx)
    per_epoch = ctx.runs["train_seconds"].sum() / ran if ran else 0.0
    doc.heading("Pruning", 3)
    if s.pruner == "none":
        doc.para("No pruner: every trial trained for all its epochs.")
        return
    at = trials.loc[trials["state"] == "pruned", "epochs_run"]
    when = f" after {int(at.min())}–{int(at.max())} epochs" if len(at) else ""
    doc.para(f"Pruner {s.pruner} compared each trial's per-epoch validation −ELBO (mean over its "
             "running seeds) with the other trials at the same epoch, every trial of a "
             f"cohort reported before any was judged. It pruned {pruned} of {len(trials)} "
             f"trials{when}. Members trained {ran} of the {full} member-epochs that full "
             f"runs of these trials would take: pruning saved {saved:.0%} of the training "
             f"({full - ran} member-epochs"
             + (f", about {per_epoch * (full - ran):.0f} member-seconds at this study's "
                f"mean {per_epoch * 1000:.1f} ms per member-epoch)." if per_epoch else ")."))


def _all_trials(ctx: Context) -> None:
    trials, keys = ctx.trials, _keys(ctx)
    ctx.doc.heading("Trials", 3)
    view = _trial_view(trials, keys, ctx.study.search.objective)
    view.insert(len(keys) + 1, "state", trials["state"].values)
    ctx.doc.table(view.assign(
        epochs=[f"{a}/{b}" for a, b in zip(trials["epochs_run"], trials["epochs"])],
        **{"train seconds": [fmt(v, 1) for v in trials["train_seconds"]]}))
