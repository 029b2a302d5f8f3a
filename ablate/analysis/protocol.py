"""The tuned protocol's report section: does the verdict survive tuning?

Owns: the rankings of the fixed and the tuned arm side by side with Kendall's τ, the generated
verdict sentence (per group of strata that differ only in their arm: each dataset or family), the tuned values each activation found in each cell (with a warning when one
lies at the edge of its range), and the expected best validation score against the tuning
budget (Dodge et al. 2019). Does not own: the tests and the expected maximum (stats.py),
figures (plots.py), the inits per arm (sections.setup), or which sections a report has
(report.py).
"""

from __future__ import annotations

import pandas as pd

from ablate.analysis import figures, plots, stats
from ablate.analysis.context import Context
from ablate.analysis.document import ci, fmt, param, upper, where
from ablate.analysis.edges import edge_hits, edge_sentence
from ablate.analysis.strata import apart_from
from ablate.study.metrics import label
from ablate.study.schema import ARMS


def arm_pairs(ctx: Context) -> list[tuple[str, dict]]:
    """The strata that differ only in their arm, by what they share ('' when the arm is the
    only stratum axis; 'dataset = sprites' beside others): (label, arm → stratum)."""
    return [(", ".join(where(k, v) for k, v in rest), {s.key["arm"]: s for s in group})
            for rest, group in apart_from(ctx.strata, "arm").items()]


def verdict(arms: dict) -> str | None:
    """The generated sentence of a pair of arms, when both could be compared."""
    fixed, tuned = (getattr(arms.get(a), "comparison", None) for a in ARMS)
    return stats.verdict(fixed, tuned)[1] if fixed is not None and tuned is not None else None


def verdict_sentences(ctx: Context) -> list[str]:
    """Each pair of arms' sentence, named by what its strata share when there are several."""
    return [(f"{upper(name)}: " if name else "") + sentence
            for name, arms in arm_pairs(ctx) if (sentence := verdict(arms))]


def section(ctx: Context) -> None:
    """Does the verdict survive tuning? The protocol, the two rankings, the verdict, the tuned
    values, and the expected best validation score against the budget."""
    p, doc, metric = ctx.study.protocol, ctx.doc, ctx.metric
    doc.heading("Does the verdict survive tuning?")
    keys = " and ".join([", ".join(p.keys[:-1]), p.keys[-1]] if len(p.keys) > 1 else p.keys)
    doc.para(f"Each activation's {keys} {'were' if len(p.keys) > 1 else 'was'} tuned separately in every cell by a TPE "
             f"search of {p.budget} trials on the validation split ({ctx.study.search.objective}, one "
             "tuning seed whose data order and noise differ from the final seeds'). Then two arms "
             f"were trained with the final seeds {', '.join(map(str, ctx.study.seeds))}: fixed (the "
             "study's own values for every activation) and tuned (each activation's best values in "
             f"its cell). Both are compared here on the test split by {label(metric)}.")
    pairs = arm_pairs(ctx)
    for name, arms in pairs:
        if len(pairs) > 1:
            doc.heading(upper(name), 3)
        if (sentence := verdict(arms)):
            doc.bullets([sentence])
        rows = side_by_side(ctx, arms)
        if not rows.empty:
            doc.table(rows)
    if not ctx.tuning.empty:
        _tuned_values(ctx)
        data = figures.expected_best_data(ctx.tuning, ctx.study.search.objective, ctx.maximize,
                                        [k for k in ctx.cells if k != "arm"])
        ctx.figure(plots.expected_best(data, ctx.order, ctx.study.search.objective,
                                       ctx.fig_dir / "expected_best.png"),
                   "Expected best validation score of each activation after n tuning trials (Dodge "
                   "et al. 2019: the expected best of n draws from its tuning trials, computed "
                   "without retraining), with a band of ± one standard deviation; where the curve "
                   "is still falling at the full budget, more tuning would have helped.")


def side_by_side(ctx: Context, arms: dict) -> pd.DataFrame:
    """Per activation: each arm's mean [CI] over seeds and its average rank, and the change."""
    columns: dict[str, dict] = {}
    for arm in ARMS:
        s = arms.get(arm)
        if s is not None and s.ranking is not None:
            rank = s.ranking.set_index("activation")
            columns[arm] = {a: (rank.loc[a], rank.loc[a, "avg_rank"]) for a in rank.index}
    if len(columns) < 2:
        return pd.DataFrame()
    acts = [a for a in ctx.order if all(a in col for col in columns.values())]
    return pd.DataFrame({
        "activation": acts,
        **{f"{arm}: {ctx.metric}": [ci(columns[arm][a][0]) for a in acts] for arm in ARMS},
        **{f"{arm}: avg rank": [fmt(columns[arm][a][1]) for a in acts] for arm in ARMS},
        "tuned − fixed": [fmt(columns["tuned"][a][0]["mean"] - columns["fixed"][a][0]["mean"])
                          for a in acts]})


def _tuned_values(ctx: Context) -> None:
    """The best tuning trial of each activation and cell, and edge warnings."""
    p, doc, objective = ctx.study.protocol, ctx.doc, ctx.study.search.objective
    cell_keys = [k for k in ctx.cells if k != "arm"]
    best = ctx.tuning[ctx.tuning["best"]]
    doc.heading("Tuned values", 3)
    doc.para(f"The best of each activation's {p.budget} tuning trials in each cell, by "
             f"{label(objective)}; the study's own values were "
             + ", ".join(f"{k} {param(getattr(ctx.study.base, k))}" for k in p.keys) + ".")
    doc.table(pd.DataFrame({
        "activation": best["activation"].values,
        **{k: [param(v) for v in best[k]] for k in cell_keys},
        **{k: [param(v) for v in best[k]] for k in p.keys},
        objective: [fmt(v) for v in best[objective]]}))
    hits: dict[tuple[str, str], list[str]] = {}  # (key, side) → the searches whose best lies there
    for _, row in best.iterrows():
        at = ", ".join(where(k, row[k]) for k in cell_keys)
        for key, side, _ in edge_hits({k: row[k] for k in p.ranges}, p.ranges):
            hits.setdefault((key, side), []).append(row["activation"] + (f" at {at}" if at else ""))
    doc.bullets([edge_sentence(key, side, p.ranges[key], f"{len(who)} of the {len(best)} tuning "
                               f"searches ({', '.join(who)})")
                 for (key, side), who in hits.items()])
