"""What every report section reads, computed once.

Owns: `Context` (the study, its tables, strata and the data of figures that more than one
section shows) and building it from the store (`build_context`): the tables written as CSVs
(runs, epochs, trials, tuning, ranking, comparisons, interactions). Does not own: which
sections a report has (report.py) or what each says (sections.py and the others).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna
import pandas as pd

from ablate.analysis import figures, strata as strata_, transfer as transfer_
from ablate.analysis.document import Doc
from ablate.analysis.tables import (cell_axes, epochs_frame, pair_contenders, runs_frame, trials_frame,
                                    tuning_frame, write_csv)
from ablate.run.store import Backend, open_store
from ablate.study.metrics import maximize as maximized
from ablate.study.schema import Study


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
    transfers: list[transfer_.Transfer] = field(default_factory=list)
    """The groups of strata that differ only in their dataset (does the verdict transfer?)."""
    dataset: str | None = None
    """The one dataset a section that pools the runs is limited to (per_dataset), if any."""

    @property
    def stratified(self) -> bool:
        """Whether the study has several strata (each section then speaks of each apart)."""
        return len(self.strata) > 1

    def stratum(self, **key) -> strata_.Stratum | None:
        """The stratum with these axis values (e.g. arm="tuned"), if any."""
        return next((s for s in self.strata if all(s.key.get(k) == v for k, v in key.items())), None)

    def data(self, s: strata_.Stratum | None = None) -> dict:
        """The run's record of a dataset (sizes, image shape, factors, trivial NLL) with its
        label: the stratum's, or the scope's when the runs hold one dataset."""
        labels = list(self.study.datasets)
        if s is not None and "dataset" in s.key:
            label = s.key["dataset"]
        else:
            held = list(self.runs["dataset"].unique()) if "dataset" in self.runs else labels
            label = held[0] if len(held) == 1 else labels[0]
        return {**self.info.get("data", {}).get(label, {}), "label": label}

    @property
    def scope(self) -> str:
        """A pooled section's heading suffix: ' — dataset sprites', or ''."""
        return f" — dataset {self.dataset}" if self.dataset else ""

    @property
    def tag(self) -> str:
        """A pooled section's figure-name suffix: '_dataset-sprites', or ''."""
        return f"_dataset-{self.dataset}" if self.dataset else ""

    def per_dataset(self) -> list["Context"]:
        """This context once per dataset, each scoped to its runs and strata (a section that
        pools runs speaks of each dataset apart), or itself when there is one."""
        if "dataset" not in self.cells or self.runs["dataset"].nunique() < 2:
            return [self]
        return [replace(self, runs=self.runs[self.runs["dataset"] == label],
                        epochs=self.epochs[self.epochs["dataset"] == label] if "dataset" in self.epochs else self.epochs,
                        cells=[c for c in self.cells if c != "dataset"], dataset=label,
                        strata=[s for s in self.strata if s.key.get("dataset") == label])
                for label in sorted(set(self.runs["dataset"]))]  # the strata's order

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
    ctx.order = first + [a for a in figures.activation_order(runs, metric, maximize) if a not in first]
    ctx.cost = figures.cost_data(runs, ctx.info.get("activation_cost", {}))
    ctx.transfers = transfer_.transfers(ctx.strata)
    for frame, name in ((strata_.ranking_table(ctx.strata), "ranking.csv"),
                        (strata_.comparisons_table(ctx.strata), "comparisons.csv"),
                        (strata_.interactions_table(ctx.strata), "interactions.csv"),
                        *(((transfer_.transfer_table(ctx.transfers), "transfer.csv"),) if ctx.transfers else ())):
        write_csv(frame, out_dir / name)
    return ctx
