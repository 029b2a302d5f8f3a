"""What may be compared: the study's strata, their slices, and the statistics of each written as
data (ranking.csv, comparisons.csv, interactions.csv) before anything is drawn.

A **stratum** is one family, one arm and one value of any axis that changes what a metric means
(likelihood, dataset): activations are compared only inside one, and no number is pooled
across two. A **slice** is one value of one varied axis inside a stratum. For every stratum:
the one ranking (average rank within matched blocks, mean and t-interval beside it), each
activation against the baseline overall and in every slice, and for every varied axis whether
the ranking changes along it (a permutation test of the slice labels over the blocks' rank
profiles, Kendall's W of the slices' rankings, the best activation per slice).
Owns: the strata and slices and the three tables. Does not own: the tests' math (stats.py,
evidence.py) or wording (sections.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablate.analysis import evidence, stats
from ablate.analysis.document import where
from ablate.study.metrics import METRICS

STRATUM_AXES = ("family", "arm", "likelihood", "dataset")
"""Axes whose values are never compared with each other: another kind of model, the tuned
protocol's arms, or a metric measured on other terms (another likelihood or dataset)."""


@dataclass
class Interaction:
    """Does the ranking of the activations change along one axis of a stratum?"""

    axis: str
    statistic: float
    p: float
    min_p: float
    n_groups: int
    kendall_w: float
    best: dict  # slice value → the activation with the best average rank there
    top: dict  # slice value → its top group when its Friedman test separates one, else None
    alpha: float = stats.ALPHA

    @property
    def decidable(self) -> bool:
        return self.min_p <= self.alpha

    @property
    def changes(self) -> bool:
        return self.p < self.alpha

    def best_text(self) -> str:
        """'tanh at 0.25, relu at 1 and 4'."""
        groups: dict[str, list] = {}
        for value, act in self.best.items():
            groups.setdefault(act, []).append(value)
        show = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
        loose = [show(v) for v, top in self.top.items() if top is None or len(top) > 1]
        return (", ".join(f"{act} at {' and '.join(show(v) for v in vs)}" for act, vs in groups.items())
                + (f" (by average rank; at {', '.join(loose)} the Nemenyi test does not separate "
                   "it from the next)" if loose else ""))

    def sentence(self) -> str:
        """The answer to "does the best activation change with <axis>?", as its test allows."""
        w = f"Kendall's W of the slices' rankings = {self.kendall_w:.2f}"
        if self.changes and len(set(self.best.values())) == 1:
            return (f"The ranking depends on {self.axis} (interaction {stats.p_text(self.p, self.min_p)}; {w}), "
                    f"below the top: {next(iter(self.best.values()))} is best in every slice.")
        if self.changes:
            return (f"The ranking depends on {self.axis} (interaction {stats.p_text(self.p, self.min_p)}; {w}): "
                    f"best {self.best_text()}.")
        if not self.decidable:
            return (f"Cannot tell whether the ranking changes with {self.axis}: with "
                    f"{self.n_groups} matched groups the interaction test's smallest possible p "
                    f"is {self.min_p:.2g} ≥ α = {self.alpha:g}. Best {self.best_text()}.")
        return (f"No evidence that the ranking changes with {self.axis} (interaction p = "
                f"{self.p:.2g}; {w}). Best {self.best_text()}.")


@dataclass
class Stratum:
    """One stratum's runs and everything the report says about it."""

    key: dict
    """Stratum axis → value ({} when the study has a single stratum)."""
    runs: pd.DataFrame
    epochs: pd.DataFrame
    cells: list[str]
    """The comparison axes varied inside this stratum (a block is one cell × seed)."""
    metric: str
    maximize: bool
    rope: float
    ranking: pd.DataFrame | None = None
    comparison: stats.Comparison | None = None
    slices: list[tuple[str, object, stats.Comparison]] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)

    @property
    def label(self) -> str:
        """'family = vae, arm = tuned', or '' for a study's only stratum."""
        return ", ".join(where(k, v) for k, v in self.key.items())

    @property
    def order(self) -> list[str]:
        """Activations best first, by the one ranking."""
        return [] if self.ranking is None else list(self.ranking["activation"])

    @property
    def ok(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]


def stratum_axes(runs: pd.DataFrame, cells: list[str]) -> list[str]:
    """The study's varied axes that separate strata."""
    return [a for a in STRATUM_AXES if a in cells and runs[a].nunique(dropna=False) > 1]


def split(runs: pd.DataFrame, epochs: pd.DataFrame, cells: list[str], metric: str, maximize: bool,
          baseline: str | None, rope: float | None = None, grid: bool = True) -> list[Stratum]:
    """The study's strata, each with its ranking and (a grid) its tests, slices and
    interactions. A stratum in which nobody has the metric (a GAN ranked by test NLL) is left
    out: there is nothing to rank."""
    axes = stratum_axes(runs, cells)
    rope = METRICS[metric].rope if rope is None else rope
    out = []
    groups = runs.groupby(axes, sort=True, dropna=False) if axes else [((), runs)]
    for values, part in groups:
        key = dict(zip(axes, values if isinstance(values, tuple) else (values,)))
        if not part[metric].notna().any():
            continue
        inner = [c for c in cells if c not in axes and part[c].notna().any()]
        ep = epochs
        for k, v in key.items():
            ep = ep[ep[k] == v] if k in ep else ep
        s = Stratum(key, part, ep, inner, metric, maximize, rope)
        _analyse(s, baseline, grid)
        out.append(s)
    return out


def apart_from(strata: list[Stratum], axis: str) -> dict[tuple, list[Stratum]]:
    """The strata that have `axis` among their key, grouped by the rest of their key: each
    group differs only in `axis` (each dataset, each arm), in the strata's order."""
    groups: dict[tuple, list[Stratum]] = {}
    for s in strata:
        if axis in s.key:
            groups.setdefault(tuple((k, v) for k, v in s.key.items() if k != axis), []).append(s)
    return groups


def _analyse(s: Stratum, baseline: str | None, grid: bool) -> None:
    if not (s.runs["status"] == "ok").any():
        return
    if grid:  # a search has no matched blocks to test (search.py)
        s.comparison = stats.compare(s.runs, s.metric, s.cells, s.maximize, baseline, rope=s.rope)
        for axis in s.cells:
            if s.runs[axis].nunique() < 2:
                continue
            for v in sorted(s.runs[axis].dropna().unique()):
                c = stats.compare(s.runs[s.runs[axis] == v], s.metric, s.cells, s.maximize,
                                  baseline, rope=s.rope)
                if c is not None:
                    s.slices.append((axis, v, c))
            if s.comparison is not None and (i := interaction(s, axis)) is not None:
                s.interactions.append(i)
    avg = s.comparison.avg_ranks if s.comparison is not None else None
    s.ranking = stats.ranking(s.runs, s.metric, s.maximize, avg)


def interaction(s: Stratum, axis: str) -> Interaction | None:
    """The activation × axis interaction on the stratum's matched blocks."""
    wide = s.comparison.wide
    index = wide.index.to_frame(index=False)
    others = [c for c in index.columns if c != axis]
    if index[axis].nunique() < 2 or wide.shape[1] < 2:
        return None
    ranks = stats.block_ranks(wide, s.maximize)
    labels = index[axis].values
    groups = index[others].astype(str).agg("|".join, axis=1).values if others else np.zeros(len(index))
    stat, p, min_p = evidence.interaction_test(ranks, labels, groups)
    values = sorted(set(labels))
    profiles = pd.DataFrame([ranks[labels == v].mean(0) for v in values], index=values, columns=wide.columns)
    tops = {v: c.top_group if c.separable else None for a, v, c in s.slices if a == axis}
    return Interaction(axis, stat, p, min_p, len(set(groups)), evidence.kendall_w(profiles.values),
                       {v: profiles.loc[v].idxmin() for v in values}, {v: tops.get(v) for v in values})


# ----------------------------------------------------------------------------- the three tables
def _keyed(s: Stratum, rows: list[dict]) -> list[dict]:
    return [{**s.key, **r} for r in rows]


def ranking_table(strata: list[Stratum]) -> pd.DataFrame:
    """ranking.csv: stratum columns, activation, rank, mean, ci_low, ci_high, n, avg_rank, failed."""
    rows = [r for s in strata if s.ranking is not None
            for r in _keyed(s, s.ranking.to_dict("records"))]
    return pd.DataFrame(rows)


def comparisons_table(strata: list[Stratum]) -> pd.DataFrame:
    """comparisons.csv: stratum × slice (`all` or `axis=value`) × activation against the
    baseline, with every column of stats.VERSUS_COLUMNS."""
    rows = []
    for s in strata:
        parts = ([("all", s.comparison)] if s.comparison is not None else []) + \
                [(f"{axis}={v:g}" if isinstance(v, float) else f"{axis}={v}", c) for axis, v, c in s.slices]
        for name, c in parts:
            rows += _keyed(s, [{"slice": name, "baseline": c.baseline, **r}
                               for r in c.versus.to_dict("records")])
    return pd.DataFrame(rows)


def interactions_table(strata: list[Stratum]) -> pd.DataFrame:
    """interactions.csv: stratum, axis, statistic, p, min_p, decidable, kendall_w, groups and
    the best activation per slice."""
    rows = [{**s.key, "axis": i.axis, "statistic": i.statistic, "p": i.p, "min_p": i.min_p,
             "decidable": i.decidable, "kendall_w": i.kendall_w, "groups": i.n_groups,
             "best": "; ".join(f"{v}: {a}" for v, a in i.best.items())}
            for s in strata for i in s.interactions]
    return pd.DataFrame(rows)


def convergence(s: Stratum, column: str, keys: list[str]) -> pd.DataFrame:
    """Configurations (activation × cell) of the stratum whose validation curve was still
    falling over its last quarter of epochs (at least 2) by more than both the seeds' spread of
    the final value and the metric's region of practical equivalence: train them longer."""
    ep = s.epochs
    if ep.empty or column not in ep or ep[column].isna().all():
        return pd.DataFrame()
    rows = []
    for group_key, part in ep.groupby(["activation", *keys], dropna=False):
        wide = part.pivot_table(index="seed", columns="epoch", values=column).dropna(axis=1)
        if wide.shape[1] < 3:
            continue
        drop, spread = evidence.still_falling(wide.values, max(2, wide.shape[1] // 4))
        if drop > max(spread, METRICS[column].rope if column in METRICS else s.rope):
            g = group_key if isinstance(group_key, tuple) else (group_key,)
            rows.append({**dict(zip(["activation", *keys], g)), "drop": drop, "spread": spread,
                         "epochs": int(wide.columns.max())})
    return pd.DataFrame(rows)
