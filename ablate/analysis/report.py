"""The report: everything it needs computed once into a `Context`, then its sections in order.

Owns: building the context (tables written as CSVs, the statistics, the data of figures that
more than one section shows) and which sections a grid or a search report has — decided in
`sections_of` alone. Does not own: what each section says (sections.py, search.py), the
statistics (stats.py), figures (plots.py) or the page's markup (document.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd

from ablate.analysis import families, plots, protocol, search, sections
from ablate.analysis import strata as strata_
from ablate.analysis.document import Doc
from ablate.analysis.tables import (cell_axes, epochs_frame, pair_contenders, runs_frame, trials_frame,
                                   tuning_frame, write_csv)
from ablate.metrics import maximize as maximized
from ablate.store import Backend, open_store
from ablate.study import Study


@dataclass
class Context:
    """What every section reads: the study, its tables, and what is derived from them once."""

    study: Study
    store: optuna.Study
    doc: Doc
    runs: pd.DataFrame
    """One row per member (runs.csv)."""
    epochs: pd.DataFrame
    """One row per member and epoch (epochs.csv)."""
    trials: pd.DataFrame
    """One row per trial (trials.csv)."""
    info: dict
    """The store's study attributes: data sizes, device, environment, activation cost, wall time."""
    metric: str
    maximize: bool
    cells: list[str]
    """The study's comparison axes other than activation, as runs.csv columns."""
    baseline: str | None
    """report.baseline when the runs have it."""
    order: list[str]
    """Activations in the first stratum's ranking order (then any others): the order every
    figure and table that shows several strata side by side uses."""
    strata: list[strata_.Stratum] = field(default_factory=list)
    """What may be compared, each with its ranking, tests, slices and interactions."""
    cost: pd.DataFrame | None = None
    tuning: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The tuned protocol's tuning trials (tuning.csv)."""

    @property
    def stratified(self) -> bool:
        """Whether the study has several strata (each section then speaks of each apart)."""
        return len(self.strata) > 1

    def stratum(self, **key) -> strata_.Stratum | None:
        """The stratum with these axis values (e.g. arm="tuned"), if any."""
        return next((s for s in self.strata if all(s.key.get(k) == v for k, v in key.items())), None)

    @property
    def ok(self) -> pd.DataFrame:
        """The members that trained to the end."""
        return self.runs[self.runs["status"] == "ok"]

    @property
    def out_dir(self) -> Path:
        return self.doc.root

    @property
    def fig_dir(self) -> Path:
        return self.doc.root / "figures"

    def figure(self, path: Path, caption: str) -> None:
        self.doc.figure(path, caption)


def build_context(study: Study, out_dir: Path) -> Context:
    """Read the store once, write runs.csv, epochs.csv, trials.csv (and the tuned protocol's
    tuning.csv), and derive the rest."""
    backend = Backend(study, out_dir)
    store = open_store(study, out_dir, create=False, backend=backend)
    runs, epochs, trials = runs_frame(store, study), epochs_frame(store, study), trials_frame(store, study)
    tuning = tuning_frame(backend.rdb(), study)
    for frame, name in ((runs, "runs.csv"), (epochs, "epochs.csv"), (trials, "trials.csv"),
                        *(((tuning, "tuning.csv"),) if study.protocol else ())):
        write_csv(frame, out_dir / name)
    runs, epochs = pair_contenders(study, runs), pair_contenders(study, epochs)
    (out_dir / "figures").mkdir(exist_ok=True)
    metric = study.metric
    maximize = maximized(metric)
    ok = runs[runs["status"] == "ok"]
    cells = cell_axes(study, runs)
    ctx = Context(study=study, store=store, doc=Doc(f"ablate report: {study.name}", out_dir),
                  runs=runs, epochs=epochs, trials=trials, info=store.user_attrs, metric=metric,
                  maximize=maximize, cells=cells,
                  baseline=next((b for b in (study.baseline, f"{study.baseline}→{study.baseline}")
                                 if b in set(runs["activation"])), None),
                  order=[], tuning=tuning)
    if ok.empty:
        return ctx
    ctx.strata = strata_.split(runs, epochs, cells, metric, maximize, ctx.baseline, study.rope,
                               grid=study.search.is_grid)
    first = ctx.strata[0].order if ctx.strata else []
    ctx.order = first + [a for a in plots.activation_order(runs, metric, maximize) if a not in first]
    ctx.cost = plots.cost_data(runs, ctx.info.get("activation_cost", {}))
    for frame, name in ((strata_.ranking_table(ctx.strata), "ranking.csv"),
                        (strata_.comparisons_table(ctx.strata), "comparisons.csv"),
                        (strata_.interactions_table(ctx.strata), "interactions.csv")):
        write_csv(frame, out_dir / name)
    return ctx


Section = Callable[[Context], None]


def sections_of(ctx: Context) -> tuple[Section, ...]:
    """The report's sections, in order: the one place a grid's and a search's report differ.

    A grid compares activations over matched blocks (results, statistics, per cell); the tuned
    protocol is a grid of both arms, led by whether its verdict survives tuning; a search shows
    what it found and how (search, pruning, trials). Each section itself says nothing when it
    has nothing to show (e.g. no finished member)."""
    if ctx.study.protocol:
        return (sections.grid_summary, sections.setup, protocol.section, sections.results,
                sections.statistics, sections.collapse, sections.sample_quality, sections.images,
                sections.cost, sections.per_cell, sections.failures, sections.reproduce)
    if ctx.study.search.is_grid:
        return (sections.grid_summary, sections.setup, sections.results, sections.statistics,
                families.cross_family, families.gans, families.encoder_decoder, families.dropout_gap,
                families.learned_shapes, sections.collapse, sections.sample_quality, sections.images,
                sections.cost,
                sections.per_cell, sections.failures, sections.reproduce)
    return (search.summary, sections.setup, search.search, sections.collapse,
            sections.sample_quality, sections.images, sections.cost, sections.failures,
            sections.reproduce)


def build_report(study: Study, out_dir: Path) -> Path:
    """Rebuild runs.csv, epochs.csv, trials.csv, figures/ and report.{html,md} from the store."""
    ctx = build_context(study, out_dir)
    if study.description:
        ctx.doc.para(study.description)
    for section in sections_of(ctx):
        section(ctx)
    return ctx.doc.write()
