"""Does the verdict transfer across datasets? The strata that differ only in their dataset,
compared on ranks — the one scale every dataset shares. Torch-free.

Owns: grouping the strata by everything but the dataset; for each group each dataset's average
ranks, the ranks averaged over every dataset's matched blocks, the Friedman test over datasets
as Demšar (2006) ranks methods over data sets (N = datasets, each ranking the activations by
their average rank there) with its Nemenyi critical difference, Kendall's τ between every two
datasets' rankings, and the activation × dataset interaction over matched blocks (blocks of
the same cell and seed in each dataset); transfer.csv, and the report's section and summary
sentence. Does not own: the per-stratum statistics (strata.py), the tests' math (evidence.py,
stats.py) or how figures look (plots.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.analysis import evidence, figures, plots, stats, strata as strata_
from ablate.analysis.document import fmt, upper, where
from ablate.analysis.strata import Interaction, Stratum


@dataclass
class Transfer:
    """One group of strata that differ only in their dataset."""

    key: dict
    """The strata's shared axis values ({} when the dataset is the only stratum axis)."""
    strata: list[Stratum]
    """The strata compared, one per dataset."""
    profiles: pd.DataFrame
    """dataset × activation: average rank within that dataset's matched blocks (1 = best)."""
    pooled: pd.Series
    """activation → average rank over every dataset's blocks, best first."""
    n_blocks: int
    friedman_stat: float
    friedman_p: float
    friedman_min_p: float
    cd: float
    """Nemenyi critical difference of the datasets' average ranks (N = datasets)."""
    over_datasets: pd.Series
    """activation → its rank averaged over datasets (each dataset ranking by its average rank
    there: Demšar's average ranks), best first."""
    tau: pd.DataFrame
    interaction: Interaction | None

    @property
    def label(self) -> str:
        return ", ".join(where(k, v) for k, v in self.key.items())

    def sentence(self) -> str:
        """The summary's answer, as far as its tests allow."""
        n = len(self.profiles)
        off = self.tau.values[np.triu_indices(n, 1)]
        text = (f"Over the {n} datasets' {self.n_blocks} matched blocks {self.pooled.index[0]} has the "
                f"best average rank ({self.pooled.iloc[0]:.2f}); Kendall's τ between the datasets' "
                f"rankings {fmt(float(np.nanmean(off)), 2)}{' on average' if n > 2 else ''} (1 = the "
                "same order, −1 reversed). ")
        if self.interaction is not None:
            text += self.interaction.sentence() + " "
        if self.friedman_min_p > stats.ALPHA:
            return text + (f"With {n} datasets the Friedman test over datasets cannot reach α "
                           f"(smallest p {self.friedman_min_p:.2g}): a verdict across datasets needs "
                           "more datasets.")
        best, rank = self.over_datasets.index[0], self.over_datasets.iloc[0]
        p = stats.p_text(self.friedman_p, self.friedman_min_p)
        if self.friedman_p >= stats.ALPHA:
            return text + (f"Friedman over datasets (Demšar 2006): {p} — no activation is separable "
                           "across datasets.")
        near = [a for a, r in self.over_datasets.items() if r - rank < self.cd]
        below = [a for a in self.over_datasets.index if a not in near]
        k = len(self.over_datasets)
        return text + (f"Friedman over datasets (Demšar 2006, each dataset one block): {p}, but with {n} "
                       f"datasets the Nemenyi critical difference is {self.cd:.2f} of the {k - 1} ranks "
                       f"that separate first from last: {len(near)} of {k} activations lie within it of "
                       f"the best over datasets, {best} (its rank averaged over datasets {rank:.2f})"
                       + (f"; only {', '.join(below)} rank{'s' if len(below) == 1 else ''} separably "
                          "below it." if below else "; none is separable from it."))


def transfers(strata: list[Stratum]) -> list[Transfer]:
    """Every group of two or more compared strata that differ only in their dataset."""
    groups = strata_.apart_from([s for s in strata if s.comparison is not None], "dataset")
    out = [_transfer(dict(rest), group) for rest, group in groups.items() if len(group) > 1]
    return [t for t in out if t is not None]


def _pooled_blocks(group: list[Stratum], common: list[str]) -> pd.DataFrame | None:
    """Every dataset's matched blocks of the common activations, with a dataset level; None
    when the datasets' blocks are not indexed alike."""
    names = {tuple(s.comparison.wide.index.names) for s in group}
    if len(names) != 1:
        return None
    frames = []
    for s in group:
        wide = s.comparison.wide[common]
        index = wide.index.to_frame(index=False)
        index.insert(0, "dataset", s.key["dataset"])
        frames.append(wide.set_axis(pd.MultiIndex.from_frame(index), axis=0))
    return pd.concat(frames)


def _transfer(key: dict, group: list[Stratum]) -> Transfer | None:
    maximize = group[0].maximize
    common = [a for a in group[0].comparison.wide.columns
              if all(a in s.comparison.wide.columns for s in group)]
    wide = _pooled_blocks(group, common) if len(common) > 1 else None
    if wide is None:
        return None
    ranks = stats.block_ranks(wide, maximize)
    labels = wide.index.get_level_values("dataset").values
    datasets = [s.key["dataset"] for s in group]
    profiles = pd.DataFrame([ranks[labels == d].mean(0) for d in datasets], index=datasets, columns=common)
    pooled = pd.Series(ranks.mean(0), index=common).sort_values(kind="stable")
    k, n = len(common), len(datasets)
    reranked = stats.block_ranks(profiles, maximize=False)
    stat, p, min_p = evidence.friedman_test(reranked) if k >= 3 else (float("nan"), float("nan"), 1.0)
    over = pd.Series(reranked.mean(0), index=common).sort_values(kind="stable")
    return Transfer(key, group, profiles, pooled, len(wide), stat, p, min_p, stats.nemenyi_cd(k, n), over,
                    kendall_taus(profiles), _interaction(group, wide, ranks, profiles))


def kendall_taus(profiles: pd.DataFrame) -> pd.DataFrame:
    """Kendall's τ between every two rows' rankings (rows: datasets, columns: activations)."""
    from scipy.stats import kendalltau

    names = list(profiles.index)
    tau = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b in itertools.combinations(names, 2):
        tau.loc[a, b] = tau.loc[b, a] = float(kendalltau(profiles.loc[a], profiles.loc[b]).statistic)
    return tau


def _interaction(group: list[Stratum], wide: pd.DataFrame, ranks: np.ndarray,
                 profiles: pd.DataFrame) -> Interaction | None:
    """The activation × dataset interaction: dataset labels permuted within the blocks that
    share every other cell and the seed."""
    index = wide.index.to_frame(index=False)
    others = [c for c in index.columns if c != "dataset"]
    groups = index[others].astype(str).agg("|".join, axis=1).values
    stat, p, min_p = evidence.interaction_test(ranks, index["dataset"].values, groups)
    tops = {s.key["dataset"]: s.comparison.top_group if s.comparison.separable else None for s in group}
    return Interaction("dataset", stat, p, min_p, len(set(groups)), evidence.kendall_w(profiles.values),
                       {d: profiles.loc[d].idxmin() for d in profiles.index}, tops)


def transfer_table(items: list[Transfer]) -> pd.DataFrame:
    """transfer.csv: per group and activation, its average rank on each dataset, over every
    dataset's blocks and over datasets (Demšar's), with the group's Friedman-over-datasets p,
    CD, mean τ and interaction p."""
    rows = []
    for t in items:
        off = t.tau.values[np.triu_indices(len(t.tau), 1)]
        for act in t.pooled.index:
            rows.append({**t.key, "activation": act, **{f"avg_rank_{d}": t.profiles.loc[d, act]
                                                         for d in t.profiles.index},
                         "avg_rank_all": t.pooled[act], "rank_over_datasets": t.over_datasets[act],
                         "blocks": t.n_blocks,
                         "friedman_p": t.friedman_p, "friedman_min_p": t.friedman_min_p,
                         "cd": t.cd, "mean_tau": float(np.nanmean(off)),
                         "interaction_p": t.interaction.p if t.interaction else np.nan})
    return pd.DataFrame(rows)


def section(ctx) -> None:
    """Does the verdict transfer across datasets? Each group's rankings side by side."""
    if not ctx.transfers:
        return
    doc = ctx.doc
    doc.heading("Does the verdict transfer across datasets?")
    doc.para("Each dataset is its own stratum (its nats and FIDs are not comparable with another's), "
             "so datasets are compared on ranks: each activation's average rank within each "
             "dataset's matched blocks, the average over every dataset's blocks, the Friedman "
             "test over datasets as Demšar (2006) ranks methods over data sets (each dataset one "
             "block), Kendall's τ between the datasets' rankings, and the activation × dataset "
             "interaction over blocks that share every other cell and the seed.")
    for t in ctx.transfers:
        if t.key:
            doc.heading(upper(t.label), 3)
        table = t.profiles.T.reindex(t.pooled.index).map(lambda v: f"{v:.2f}")
        table["all datasets"] = t.pooled.map(lambda v: f"{v:.2f}")
        doc.table(table.reset_index(names="activation"))
        doc.para(t.sentence())
        doc.table(t.tau.map(lambda v: fmt(v, 2)).reset_index(names="Kendall's τ"))
        tag = "".join(f"_{k}-{v}" for k, v in t.key.items())
        data = figures.interaction_data([(d, t.profiles.loc[d]) for d in t.profiles.index])
        ctx.figure(plots.interaction(data, "dataset", list(t.pooled.index),
                                     "Average rank per dataset: crossing lines mean the best activation changes",
                                     ctx.fig_dir / f"transfer{tag}.png"),
                   "Average rank of each activation within each dataset's matched blocks"
                   + (f" (activation × dataset interaction p = {t.interaction.p:.2g})." if t.interaction else "."))
