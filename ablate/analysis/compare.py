"""Several studies side by side: `ablate compare`.

Owns: the comparison report (each activation's mean [CI] and average rank in every study,
each study's generated claims, a figure of average ranks per study). Does not own: the
statistics (stats.py) or the page's markup (document.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablate.analysis import plots, stats, strata as strata_
from ablate.analysis.document import Doc, ci
from ablate.analysis.tables import cell_axes, epochs_frame, runs_frame
from ablate.run.store import open_store
from ablate.study.metrics import label, maximize as maximized
from ablate.study.schema import Study


def build_comparison(pairs: list[tuple[Study, Path]], out_dir: Path, labels: list[str] | None = None) -> Path:
    """Write out_dir/report.{html,md} comparing the studies of `pairs` (study, results folder),
    each called by its label (its name; name and folder when two runs share a name)."""
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    names = labels or [s.name for s, _ in pairs]
    doc = Doc(f"ablate comparison: {' vs '.join(names)}", out_dir)
    table: dict[str, dict[str, str]] = {}
    ranks: dict[str, pd.Series] = {}
    summary = []
    for (study, folder), name in zip(pairs, names):
        summary += _study(study, folder, name, table, ranks)
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
        columns = list(dict.fromkeys(c for row in table.values() for c in row))  # each stratum's columns
        rows = [table[a] for a in frame.index if a in table]
        doc.table(pd.DataFrame(rows).reindex(columns=columns).fillna("–"))
        doc.figure(plots.rank_comparison(frame, out_dir / "figures" / "ranks.png"),
                   "Average rank of each activation in each study (1 = best); activations "
                   "ordered by their mean rank over studies.")
    doc.heading("Reproduce")
    doc.para("ablate compare " + " ".join(str(f) for _, f in pairs))
    return doc.write()


def _study(study: Study, folder: Path, called: str, table: dict, ranks: dict) -> list[str]:
    """One study's summary lines; fills its columns of `table` and its average ranks."""
    store = open_store(study, folder, create=False)
    runs = runs_frame(store, study)
    metric, maximize = study.metric, maximized(study.metric)
    cells = cell_axes(study, runs)
    data = store.user_attrs.get("data", {})
    sizes = "; ".join(f"{label_} {data.get(label_, {}).get('n_train', '?')} training / "
                      f"{data.get(label_, {}).get('n_test', '?')} test images" for label_ in study.datasets)
    lines = [f"{called}: dataset {sizes}, {len(runs)} members, metric {label(metric)}."]
    if runs.empty or (runs["status"] == "ok").sum() == 0:
        return lines
    baseline = study.baseline if study.baseline in set(runs["activation"]) else None
    for part in strata_.split(runs, epochs_frame(store, study), cells, metric, maximize, baseline,
                              study.rope, grid=study.search.is_grid):
        name = f"{called} ({part.label})" if part.key else called  # each stratum apart
        c = part.comparison
        if c is not None:
            ranks[name] = c.avg_ranks
            lines += [f"{name} — {t}" for t in stats.claims(c)]
        for _, row in part.ranking.iterrows():
            entry = table.setdefault(row["activation"], {"activation": row["activation"]})
            entry[f"{name}: {metric}"] = ci(row)
            if c is not None:
                entry[f"{name}: avg rank"] = f"{row['avg_rank']:.2f}"
    return lines
