"""The report: tables and figures derived from the store, as self-contained HTML and Markdown.

Owns: which sections exist, their wording, and writing report.html / report.md / CSVs /
figures. Does not own: statistics (stats.py) or figure drawing (plots.py).
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import plots, stats
from ablate.files import atomic_open
from ablate.store import open_store
from ablate.study import MAXIMIZE
from ablate.study import Study
from ablate.tables import epochs_frame, runs_frame, trials_frame, write_csv
from ablate.train import MANIFOLD_SIDE


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ci(row, digits: int = 2) -> str:
    if not math.isfinite(row["ci_low"]):
        return f"{_fmt(row['mean'], digits)}"
    return f"{_fmt(row['mean'], digits)} [{_fmt(row['ci_low'], digits)}, {_fmt(row['ci_high'], digits)}]"


class _Doc:
    """Builds the HTML and Markdown versions side by side; escapes every string in HTML."""

    def __init__(self, title: str):
        self.html: list[str] = []
        self.md: list[str] = [f"# {title}", ""]
        self.title = title

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md += [f"{'#' * level} {text}", ""]

    def para(self, text: str) -> None:
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md += [text, ""]

    def bullets(self, items: list[str]) -> None:
        self.html.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in items) + "</ul>")
        self.md += [f"- {t}" for t in items] + [""]

    def code(self, text: str) -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md += ["```yaml", text.rstrip(), "```", ""]

    def table(self, frame: pd.DataFrame) -> None:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                       for row in frame.itertuples(index=False))
        self.html.append(f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        self.md.append("| " + " | ".join(map(str, frame.columns)) + " |")
        self.md.append("|" + "---|" * len(frame.columns))
        for row in frame.itertuples(index=False):
            self.md.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        self.md.append("")

    def figure(self, path: Path, caption: str, root: Path) -> None:
        data = base64.b64encode(path.read_bytes()).decode()
        self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
                         f'{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')
        self.md += [f"![{caption}]({path.relative_to(root).as_posix()})", "", f"*{caption}*", ""]

    def render_html(self) -> str:
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #1b1f24; }}
h1 {{ border-bottom: 2px solid #2f6690; padding-bottom: .2em; }}
h2 {{ margin-top: 2em; color: #2f6690; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
th, td {{ border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f4f8; }} td:first-child, th:first-child {{ text-align: left; }}
tbody tr:nth-child(even) {{ background: #f8fafc; }}
pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 12px; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 13px; color: #57606a; }}
@media print {{ body {{ max-width: none; }} figure, table {{ page-break-inside: avoid; }} }}
th {{ cursor: pointer; }} th:hover {{ background: #e2eaf2; }}
ul {{ padding-left: 1.3em; }} li {{ margin: .3em 0; }}
</style></head><body>
{os.linesep.join(self.html)}
<script>
// Click a column header to sort by it (numbers by value; click again to reverse).
document.querySelectorAll("table.sortable th").forEach((th, col) => th.addEventListener("click", () => {{
  const body = th.closest("table").tBodies[0], rows = Array.from(body.rows);
  const dir = th.dataset.dir === "asc" ? -1 : 1; th.dataset.dir = dir === 1 ? "asc" : "desc";
  const key = r => {{ const t = r.cells[col].textContent.trim(), n = parseFloat(t);
                      return isNaN(n) ? t : n; }};
  rows.sort((a, b) => {{ const x = key(a), y = key(b);
    return (typeof x === typeof y ? (x > y) - (x < y) : typeof x === "number" ? -1 : 1) * dir; }});
  rows.forEach(r => body.appendChild(r));
}}));
</script>
</body></html>
"""


def _atomic_write(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def _axes(study: Study, runs: pd.DataFrame) -> list[str]:
    """The study's comparison axes other than activation, as runs.csv columns."""
    return [k for k in study.space if k != "activation" and k in runs.columns]


def _verdicts(c: stats.Comparison, verdict: str) -> str:
    names = [] if c.versus.empty else list(c.versus.loc[c.versus["verdict"] == verdict, "activation"])
    return ", ".join(names) or "–"


def _where(axis: str, value) -> str:
    return f"{axis} = {value:g}" if isinstance(value, float) else f"{axis} = {value}"


def _grid_summary(doc: _Doc, study: Study, runs: pd.DataFrame, total: int, ok: pd.DataFrame,
                  n_failed: int, comparison, per_axis: list, cells: list[str], baseline) -> None:
    """A grid's summary: what finished, the means, and the claims the matched tests allow."""
    metric = study.metric
    maximize = metric in MAXIMIZE
    better = "higher" if maximize else "lower"
    doc.para(f"{len(runs)} of {total} members finished ({len(ok)} trained to the end, "
             f"{n_failed} failed). Metric: {plots.label(metric)}, {better} is better; intervals "
             "are 95% bootstrap confidence intervals over seeds; tests are paired over matched "
             "blocks (one block = one cell and seed, where every activation saw the same data "
             f"order and noise) at α = {stats.ALPHA:g}.")
    if not ok.empty:
        rank = stats.ranking(runs, metric, cells, maximize)
        best = rank.iloc[0]
        sentence = (f"{'Highest' if maximize else 'Lowest'} mean over all cells: "
                    f"{best['activation']}, {_ci(best)}")
        if baseline and baseline != best["activation"] and baseline in set(rank["activation"]):
            b = rank[rank["activation"] == baseline].iloc[0]
            sentence += f"; the baseline {baseline}: {_ci(b)}"
        doc.para(sentence + ". Means weigh large differences; the tests below count which "
                 "activation wins in each matched block.")
    if comparison is not None:
        doc.bullets([s[0].upper() + s[1:] for s in stats.claims(comparison, "Overall")])
        axis_claims = [t for axis, v, c in per_axis for t in stats.claims(c, "At " + _where(axis, v))[:1]]
        if axis_claims:
            doc.para("Does the answer change along the axes? The same tests within each value:")
            doc.bullets(axis_claims)
    else:
        doc.para("Too few finished members for a statistical comparison (at least two "
                 "activations with two matched blocks are needed).")



def _param(v):
    """A parameter value as a table shows it: floats to 3 significant digits."""
    return f"{v:.3g}" if isinstance(v, float) else v


def _ranked(trials: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Complete trials with an objective, best first."""
    objective = study.search.objective
    done = trials[trials["state"] == "complete"].dropna(subset=[objective])
    return done.sort_values(objective, ascending=study.search.direction != "maximize")


def _trial_view(frame: pd.DataFrame, keys: list[str], objective: str) -> pd.DataFrame:
    """trial, its parameters and its objective as mean [95% CI] over seeds."""
    return pd.DataFrame({
        "trial": frame["trial"].values,
        **{k: [_param(v) for v in frame[k]] for k in keys},
        objective: [_ci(r.rename({objective: "mean"})) for _, r in frame.iterrows()]})


def _pruning(trials: pd.DataFrame, runs: pd.DataFrame) -> tuple[int, int, int, float]:
    """(pruned trials, member-epochs run, member-epochs a full run of every trial would take,
    share saved)."""
    ran = int(runs["epochs_run"].fillna(0).sum())
    full = int(runs["epochs"].sum())
    return int((trials["state"] == "pruned").sum()), ran, full, (1 - ran / full) if full else 0.0


def _search_summary(doc: _Doc, study: Study, trials: pd.DataFrame, runs: pd.DataFrame) -> None:
    """A search's summary: trials by state, the best configuration with its seed CI, and the
    best found for each activation, said as what it is (not a matched comparison)."""
    s, objective = study.search, study.search.objective
    counts = trials["state"].value_counts()
    pruned, ran, full, saved = _pruning(trials, runs)
    doc.para(f"{len(trials)} of {s.n_trials} trials finished ({counts.get('complete', 0)} complete, "
             f"{pruned} pruned, {counts.get('failed', 0)} failed), chosen by {s.strategy} "
             f"(sampler_seed {s.sampler_seed}), each trained with {len(study.seeds)} seeds. "
             f"Objective: {plots.label(objective)}, mean over a trial's seeds, {s.direction}d. "
             f"Pruner: {s.pruner}"
             + (f"; it stopped {pruned} trials early, so {ran} of {full} member-epochs were "
                f"trained ({saved:.0%} saved)." if s.pruner != "none" else "."))
    done = _ranked(trials, study)
    if done.empty:
        doc.para("No trial completed yet.")
        return
    keys = [*study.space, *study.ranges]
    best = done.iloc[0]
    params = ", ".join(f"{k} {_param(best[k])}" for k in keys)
    items = [f"Best configuration found (trial {best['trial']}): {params}; "
             f"{objective} {_ci(best.rename({objective: 'mean'}))} over {best['seeds_ok']} seeds."]
    per_act = done.groupby("activation", sort=False).head(1)
    if len(per_act) > 1:
        items.append("Best per activation: " + "; ".join(
            f"{r['activation']} {r[objective]:.2f}" for _, r in per_act.iterrows()) + ".")
    doc.bullets(items)
    doc.para("A search spends its trials where its sampler expects gains, so activations get "
             "unequal numbers of trials at different settings: these are the best "
             "configurations found, not a matched test. For a paired comparison, run a grid "
             "around the best settings (search.strategy: grid).")


def _search_section(doc: _Doc, study: Study, store, trials: pd.DataFrame, runs: pd.DataFrame,
                    epochs: pd.DataFrame, order: list[str], fig_dir: Path, out_dir: Path) -> None:
    """Optimization history, parameter importances, slices, the best configurations with
    their seed CIs, pruning and its savings, and every trial."""
    import optuna

    s, objective = study.search, study.search.objective
    maximize = s.direction == "maximize"
    keys = [*study.space, *study.ranges]
    doc.heading("Search")
    order = order or sorted(set(trials["activation"]))
    doc.figure(plots.history(trials, objective, maximize, order, fig_dir / "history.png"),
               "Optimization history: each complete trial's objective (mean over seeds), "
               "coloured by activation; crosses are pruned trials at the last per-epoch value "
               "the pruner saw; the line is the best so far.", out_dir)
    done = _ranked(trials, study)
    varied = [k for k in keys if done[k].nunique() > 1]
    if len(done) >= 4 and varied:
        imp = optuna.importance.get_param_importances(
            store, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=varied)
        doc.figure(plots.importances(imp, fig_dir / "importances.png"),
                   "Parameter importances (fANOVA, Hutter et al. 2014: the share of the "
                   "objective's variance over complete trials that each parameter explains, "
                   "from a random forest fitted to them).", out_dir)
    ranges = {k: r.log for k, r in study.ranges.items()}
    if ranges:
        doc.figure(plots.slices(trials, objective, maximize, ranges, order, fig_dir / "slices.png"),
                   "The objective of every complete trial against each searched range, "
                   "coloured by activation.", out_dir)
    if not epochs.empty:
        doc.figure(plots.curves(epochs, order, fig_dir / "curves.png",
                                "Learning curves: mean over trials and seeds, 95% CI band"),
                   "Test negative ELBO per epoch, mean over every trial and seed of each "
                   "activation, with a 95% CI band; pruned trials' curves end early.", out_dir)

    if not done.empty:
        doc.heading("Best configurations", 3)
        top = done.head(10)
        doc.para(f"The ten best complete trials by mean {plots.label(objective)} over seeds, "
                 "with a 95% bootstrap confidence interval over the seeds.")
        doc.table(_trial_view(top, keys, objective).assign(seeds=top["seeds_ok"].values))
        best = done.groupby("activation").head(1)
        others = sorted(set(study.activations()) - set(best["activation"]))
        view = _trial_view(best, [k for k in keys if k != "activation"], objective)
        view = pd.concat([  # object columns: the rows without a trial must not turn ints into floats
            view.rename(columns={"trial": "best trial"}).assign(activation=best["activation"].values).astype(object),
            pd.DataFrame({"activation": others, objective: "no complete trial"}, dtype=object)])
        counts = trials.groupby("activation")["state"].agg(
            trials="size", pruned=lambda x: int((x == "pruned").sum()))
        counts = counts.reindex(view["activation"]).fillna(0).astype(int)
        view = view.assign(trials=counts["trials"].values, pruned=counts["pruned"].values)
        doc.heading("Best per activation", 3)
        doc.para("Each activation's best complete trial, and how many trials the sampler gave it.")
        columns = ["activation", "trials", "pruned", "best trial",
                   *[k for k in keys if k != "activation"], objective]
        doc.table(view[columns].fillna("–"))

    pruned, ran, full, saved = _pruning(trials, runs)
    per_epoch = runs["train_seconds"].sum() / ran if ran else 0.0
    doc.heading("Pruning", 3)
    if s.pruner == "none":
        doc.para("No pruner: every trial trained for all its epochs.")
    else:
        at = trials.loc[trials["state"] == "pruned", "epochs_run"]
        when = f" after {int(at.min())}–{int(at.max())} epochs" if len(at) else ""
        doc.para(f"Pruner {s.pruner} compared each trial's per-epoch test −ELBO (mean over its "
                 "running seeds) with the other trials at the same epoch, every trial of a "
                 f"cohort reported before any was judged. It pruned {pruned} of {len(trials)} "
                 f"trials{when}. Members trained {ran} of the {full} member-epochs that full "
                 f"runs of these trials would take: pruning saved {saved:.0%} of the training "
                 f"({full - ran} member-epochs"
                 + (f", about {per_epoch * (full - ran):.0f} member-seconds at this study's "
                    f"mean {per_epoch * 1000:.1f} ms per member-epoch)." if per_epoch else ")."))
    doc.heading("Trials", 3)
    view = _trial_view(trials, keys, objective)
    view.insert(len(keys) + 1, "state", trials["state"].values)
    doc.table(view.assign(
        epochs=[f"{a}/{b}" for a, b in zip(trials["epochs_run"], trials["epochs"])],
        **{"train seconds": [_fmt(v, 1) for v in trials["train_seconds"]]}))


def build_report(study: Study, out_dir: Path) -> Path:
    """Rebuild runs.csv, epochs.csv, figures/ and report.{html,md} from the store."""
    store = open_store(study, out_dir, create=False)
    runs = runs_frame(store, study)
    epochs = epochs_frame(store, study)
    write_csv(runs, out_dir / "runs.csv")
    write_csv(epochs, out_dir / "epochs.csv")
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)

    metric = study.metric
    maximize = metric in MAXIMIZE
    info = store.user_attrs
    env = info.get("environment", {})
    cells = _axes(study, runs)
    baseline = study.baseline if study.baseline in set(runs["activation"]) else None
    doc = _Doc(f"ablate report: {study.name}")
    doc.html.append(f"<h1>{html.escape(doc.title)}</h1>")
    if study.description:
        doc.para(study.description)

    search = not study.search.is_grid
    total = (study.search.n_trials if search else len(study.points())) * len(study.seeds)
    ok = runs[runs["status"] == "ok"]
    n_failed = int((runs["status"] == "failed").sum())
    trials = trials_frame(store, study)
    write_csv(trials, out_dir / "trials.csv")
    # A search gives activations unequal numbers of trials at different settings: there are
    # no matched blocks to test, only the best configuration found for each.
    comparison = stats.compare(runs, metric, cells, maximize, baseline) if not ok.empty and not search else None
    per_axis = []  # (axis, value, Comparison)
    for axis in cells if not search else []:
        values = sorted(runs[axis].unique())
        if len(values) > 1:
            for v in values:
                c = stats.compare(runs[runs[axis] == v], metric, cells, maximize, baseline)
                if c is not None:
                    per_axis.append((axis, v, c))

    # ------------------------------------------------------------------ summary
    doc.heading("Summary")
    if search:
        _search_summary(doc, study, trials, runs)
    else:
        _grid_summary(doc, study, runs, total, ok, n_failed, comparison, per_axis, cells, baseline)

    # ------------------------------------------------------------------ setup
    doc.heading("Setup")
    data = info.get("data", {})
    wall = info.get("wall_seconds")
    doc.para(f"Dataset {study.dataset['name']}: {data.get('n_train', '?')} training and "
             f"{data.get('n_test', '?')} test images of {data.get('dim', '?')} pixels. "
             f"Device: {info.get('device', '?')}. Seeds: {', '.join(map(str, study.seeds))}. "
             + (f"Wall time of the study: {wall / 60:.1f} min." if wall else ""))
    if env:
        doc.table(pd.DataFrame({"component": list(env), "version": list(env.values())}))
    doc.code(study.source)

    order = plots.activation_order(runs, metric, maximize) if not ok.empty else []
    if search and not trials.empty:
        _search_section(doc, study, store, trials, runs, epochs, order, fig_dir, out_dir)
    if not ok.empty and not search:
        rank = stats.ranking(runs, metric, cells, maximize)
        # -------------------------------------------------------------- results per axis
        doc.heading("Results")
        view = rank.assign(**{metric: rank.apply(_ci, axis=1)})
        if comparison is not None:
            view["avg_rank"] = view["activation"].map(comparison.avg_ranks).map(lambda v: f"{v:.2f}")
        cols = ["rank", "activation", metric] + (["avg_rank"] if comparison is not None else []) + ["n", "failed"]
        doc.para("Each activation's metric averaged over every cell, then mean and 95% CI over "
                 "seeds; avg_rank is its average rank within matched blocks (1 = best).")
        doc.table(view[cols].rename(columns={"n": "seeds"}))
        doc.figure(plots.boxes(runs, metric, order, fig_dir / "ranking.png"),
                   f"{plots.label(metric)} of every member (box over cells and seeds, points "
                   "coloured by kl_weight), activations ordered by mean, one panel per latent_dim.",
                   out_dir)
        doc.figure(plots.heatmaps(runs, metric, order, fig_dir / "heatmap.png"),
                   f"Mean {plots.label(metric)} per activation and latent_dim, one panel per kl_weight.",
                   out_dir)
        if not epochs.empty:
            doc.figure(plots.curves(epochs, order, fig_dir / "curves.png"),
                       "Test negative ELBO per epoch, mean over cells and seeds with a 95% CI band.",
                       out_dir)
        if runs["test_kl"].notna().any():
            doc.figure(plots.rate_distortion(runs, order, fig_dir / "rate_distortion.png"),
                       "Rate–distortion plane (Alemi et al. 2018): mean test KL (rate) against mean "
                       "test reconstruction (distortion) per kl_weight. Models on one dotted line "
                       "have equal −ELBO but trade rate for distortion differently.", out_dir)

    # ------------------------------------------------------------------ statistics
    if comparison is not None:
        doc.heading("Statistics")
        if len(comparison.avg_ranks) >= 3:
            doc.para(f"Friedman test over {comparison.n_blocks} matched blocks and "
                     f"{len(comparison.avg_ranks)} activations: χ² = {comparison.friedman_stat:.1f}, "
                     f"p = {comparison.friedman_p:.2g}. Nemenyi critical difference of average "
                     f"ranks: {comparison.cd:.2f}. Top group (not separable from the best): "
                     f"{', '.join(comparison.top_group)}.")
            doc.figure(plots.cd_diagram(comparison, fig_dir / "cd_diagram.png"),
                       "Critical difference diagram: average ranks over matched blocks; a bar "
                       "joins activations whose ranks differ by less than the Nemenyi CD.", out_dir)
        if not comparison.versus.empty:
            v = comparison.versus
            doc.para(f"Each activation against the baseline {baseline}: paired Wilcoxon "
                     "signed-rank test over matched blocks, Holm-corrected across activations. "
                     f"median_diff is the median of (activation − {baseline}) in {plots.label(metric)}; "
                     "effect_r is the matched-pairs rank-biserial correlation, from −1 (always worse) "
                     "to +1 (always better).")
            doc.table(pd.DataFrame({
                "activation": v["activation"], "pairs": v["n_pairs"],
                "median_diff": v["median_diff"].map(lambda x: _fmt(x, 3)),
                "effect_r": v["effect_r"].map(lambda x: f"{x:+.2f}"),
                "p": v["p"].map(lambda x: f"{x:.2g}"), "p_holm": v["p_holm"].map(lambda x: f"{x:.2g}"),
                "verdict": v["verdict"]}))
        if per_axis:
            doc.heading("Per axis", 3)
            doc.table(pd.DataFrame([{
                "slice": _where(axis, val), "blocks": c.n_blocks,
                "friedman_p": f"{c.friedman_p:.2g}" if math.isfinite(c.friedman_p) else "–",
                "best (avg rank)": f"{c.avg_ranks.index[0]} ({c.avg_ranks.iloc[0]:.2f})",
                "top group": ", ".join(c.top_group),
                f"better than {baseline}": _verdicts(c, "better"),
                f"worse than {baseline}": _verdicts(c, "worse"),
            } for axis, val, c in per_axis]))

    # ------------------------------------------------------------------ collapse and dead units
    if not ok.empty:
        doc.heading("Posterior collapse and dead units")
        if not search and runs["active_units"].notna().any() and runs["mutual_info"].notna().any():
            doc.figure(plots.collapse(runs, order, fig_dir / "collapse.png"),
                       "Active units (Var_x E[z_d|x] ≥ 0.01) and mutual information I(x; z) "
                       "against kl_weight; fewer active units and less information = collapse.",
                       out_dir)
        if "kl_per_dim" in runs.columns and runs["test_kl"].notna().any():
            doc.figure(plots.kl_per_dim(runs, metric, maximize, order, fig_dir / "kl_per_dim.png",
                                        by_latent=not search),
                       "KL of each latent dimension, sorted, for the best member of each "
                       "activation; dimensions under the dotted line (0.01 nats) carry almost "
                       "nothing.", out_dir)
        doc.figure(plots.health(runs, order, fig_dir / "dead_units.png"),
                   "Fraction of hidden units that are constant over the test set (dead), and "
                   "share of members that diverged, per activation.", out_dir)
        h = plots.health_data(runs).set_index("activation").reindex(order).reset_index()
        au = stats.summarize(runs, "active_units", ["activation"]).set_index("activation")
        mi = stats.summarize(runs, "mutual_info", ["activation"]).set_index("activation")
        doc.table(pd.DataFrame({
            "activation": h["activation"],
            "active_units": [_ci(au.loc[a]) if a in au.index else "–" for a in h["activation"]],
            "mutual_info": [_ci(mi.loc[a]) if a in mi.index else "–" for a in h["activation"]],
            "dead_units": [_fmt(x, 3) for x in h["dead_units"]],
            "diverged": [f"{d}/{m}" for d, m in zip(h["diverged"], h["members"])]}))

        # -------------------------------------------------------------- images
        shape = data.get("image_shape")
        samples = out_dir / "samples"
        if shape and samples.exists():
            shape = tuple(shape)
            cell, members = plots.showcase_members(runs, metric, maximize, cells)
            where = ", ".join(_where(k, v) for k, v in cell.items()) or "each activation's best configuration"
            doc.heading("Images")
            rows = plots.image_rows(samples, members, "recon", order)
            originals = samples / "originals.npz"
            if rows and originals.exists():
                with np.load(originals) as z:
                    orig = z["recon"]
                doc.figure(plots.image_table(rows, shape, f"Reconstructions at {where}",
                                             fig_dir / "reconstructions.png", orig),
                           f"Reconstructions (decoded posterior mean) of the first test images "
                           f"by each activation's best seed at {where}; top row: the originals.",
                           out_dir)
            rows = plots.image_rows(samples, members, "prior", order)
            if rows:
                doc.figure(plots.image_table(rows, shape, f"Prior samples at {where}",
                                             fig_dir / "samples.png"),
                           "Decoded means of draws z ~ N(0, I), same members.", out_dir)
            if 2 in set(runs["latent_dim"]):
                two = runs[runs["latent_dim"] == 2]
                cell2, members2 = plots.showcase_members(two, metric, maximize, cells)
                rows = plots.image_rows(samples, members2, "manifold", order)
                if rows:
                    where2 = (", ".join(_where(k, v) for k, v in cell2.items())
                              or "latent_dim = 2, each activation's best configuration")
                    doc.figure(plots.manifolds(rows, shape, MANIFOLD_SIDE,
                                               f"Latent manifolds at {where2}",
                                               fig_dir / "manifold.png"),
                               f"Decoded latent manifold of each activation's best seed at "
                               f"{where2}: z on a {MANIFOLD_SIDE}×{MANIFOLD_SIDE} grid of the "
                               "prior's 5%–95% quantiles.", out_dir)

        # -------------------------------------------------------------- cost
        doc.heading("Cost")
        act_ns = info.get("activation_cost", {})
        doc.para("Members of a cohort train together, so a member's train seconds are its share "
                 "of its cohort's wall time by parameter count: it tells what a configuration "
                 "costs, not what an activation costs. What differs between activations is the "
                 "activation itself, measured before training on the same device. Total: "
                 f"{runs['train_seconds'].sum():.0f} member-seconds"
                 + (f" in {wall:.0f} s of wall time." if wall else "."))
        if act_ns:
            doc.figure(plots.cost(runs, act_ns, order, fig_dir / "cost.png"),
                       "Forward + backward time of each activation per element (best of 5 on "
                       "4 M elements).", out_dir)
        c = plots.cost_data(runs, act_ns).set_index("activation").reindex(order).reset_index()
        doc.table(pd.DataFrame({"activation": c["activation"],
                                "train seconds per member": [_fmt(v, 3) for v in c["train_seconds"]],
                                "activation ns/element": [_fmt(v, 2) for v in c["ns_per_element"]]}))

    if not ok.empty and not search:
        doc.heading("Per cell")
        cell_t = stats.summarize(runs, metric, [*cells, "activation"])
        cell_t = cell_t.sort_values([*cells, "mean"], ascending=[True] * len(cells) + [not maximize])
        view = cell_t.assign(**{metric: cell_t.apply(_ci, axis=1)})[[*cells, "activation", metric, "n"]]
        doc.table(view.rename(columns={"n": "seeds"}))

    doc.heading("Failures")
    failed = runs[runs["status"] == "failed"]
    if failed.empty:
        doc.para("No member failed." + (" Pruned members are counted in the Search section."
                                        if search else ""))
    else:
        keys = [k for k in [*study.space, *study.ranges] if k != "activation"]
        doc.table(failed[["trial", "activation", *keys, "seed", "status", "fail_epoch", "reason"]].assign(
            fail_epoch=lambda f: f["fail_epoch"].map(lambda v: "–" if pd.isna(v) else int(v))))

    doc.heading("Reproduce")
    doc.para(f"make study STUDY={study.path}   (or: ablate run {study.path}); "
             f"ablate report {out_dir} rebuilds this report from the store without training.")

    _atomic_write(out_dir / "report.html", doc.render_html())
    _atomic_write(out_dir / "report.md", "\n".join(doc.md) + "\n")
    return out_dir / "report.html"


def build_comparison(pairs: list[tuple[Study, Path]], out_dir: Path) -> Path:
    """Several studies side by side: each activation's mean [CI] and average rank per study,
    the generated claims of each, and a figure of average ranks across studies."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    names = [s.name for s, _ in pairs]
    doc = _Doc(f"ablate comparison: {' vs '.join(names)}")
    doc.html.append(f"<h1>{html.escape(doc.title)}</h1>")
    table: dict[str, dict[str, str]] = {}
    ranks: dict[str, pd.Series] = {}
    summary = []
    for study, folder in pairs:
        store = open_store(study, folder, create=False)
        runs = runs_frame(store, study)
        metric, maximize = study.metric, study.metric in MAXIMIZE
        cells = _axes(study, runs)
        data = store.user_attrs.get("data", {})
        summary.append(f"{study.name}: dataset {study.dataset['name']} "
                       f"({data.get('n_train', '?')} training / {data.get('n_test', '?')} test "
                       f"images), {len(runs)} members, metric {plots.label(metric)}.")
        if runs.empty or (runs["status"] == "ok").sum() == 0:
            continue
        baseline = study.baseline if study.baseline in set(runs["activation"]) else None
        c = stats.compare(runs, metric, cells, maximize, baseline)
        if c is not None:
            ranks[study.name] = c.avg_ranks
            summary += [f"{study.name} — {t}" for t in stats.claims(c)]
        for _, row in stats.ranking(runs, metric, cells, maximize).iterrows():
            entry = table.setdefault(row["activation"], {"activation": row["activation"]})
            entry[f"{study.name}: {metric}"] = _ci(row)
            if c is not None:
                entry[f"{study.name}: avg rank"] = f"{c.avg_ranks[row['activation']]:.2f}"
    doc.heading("Summary")
    doc.bullets(summary)
    if ranks:
        frame = pd.DataFrame(ranks)
        frame = frame.loc[frame.mean(axis=1).sort_values().index]
        doc.heading("Side by side")
        doc.para("Mean and 95% CI over seeds of each study's metric (averaged over its cells), "
                 "and the average rank within matched blocks (1 = best). Ranks compare across "
                 "studies even when the metric's scale does not.")
        if frame.isna().any().any():
            doc.para("The studies do not test the same activations, so their ranks are out of "
                     "different numbers of competitors: compare orders, not rank values.")
        columns = ["activation"] + [c for s in names for c in (f"{s}: {pairs[names.index(s)][0].metric}", f"{s}: avg rank")]
        rows = [table[a] for a in frame.index if a in table]
        doc.table(pd.DataFrame(rows).reindex(columns=columns).fillna("–"))
        doc.figure(plots.rank_comparison(frame, fig_dir / "ranks.png"),
                   "Average rank of each activation in each study (1 = best); activations "
                   "ordered by their mean rank over studies.", out_dir)
    doc.heading("Reproduce")
    doc.para("ablate compare " + " ".join(str(f) for _, f in pairs))
    _atomic_write(out_dir / "report.html", doc.render_html())
    _atomic_write(out_dir / "report.md", "\n".join(doc.md) + "\n")
    return out_dir / "report.html"
