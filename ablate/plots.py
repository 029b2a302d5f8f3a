"""Figures. Each is a plain `*_data` function (tested on its numbers) and a thin renderer.

Owns: what each figure shows and how it looks. Does not own: the statistics behind it
(stats.py) or where the PNG ends up in a report (report.py).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ablate.stats import summarize  # noqa: E402

LABELS = {"test_nll": "test NLL (IWAE, nats/image)", "test_nelbo": "test −ELBO (nats/image)",
          "test_recon": "test reconstruction (nats/image)", "test_kl": "test KL (nats/image)",
          "active_units": "active units", "mutual_info": "I(x; z) (nats)",
          "dead_units": "dead hidden units (fraction)", "probe_accuracy": "linear-probe accuracy",
          "train_seconds": "train seconds per member"}
sns.set_theme(style="whitegrid", context="notebook")


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def activation_order(runs: pd.DataFrame, metric: str, maximize: bool) -> list[str]:
    ok = runs[runs["status"] == "ok"]
    means = ok.groupby("activation")[metric].mean().sort_values(ascending=not maximize)
    rest = sorted(set(runs["activation"]) - set(means.index))
    return list(means.index) + rest


def heatmap_data(runs: pd.DataFrame, metric: str, order: list[str]) -> dict[float, pd.DataFrame]:
    """Mean metric over seeds: for each kl_weight, a table activation × latent_dim."""
    cells = summarize(runs, metric, ["kl_weight", "activation", "latent_dim"])
    out = {}
    for beta, part in cells.groupby("kl_weight"):
        table = part.pivot(index="activation", columns="latent_dim", values="mean")
        out[float(beta)] = table.reindex([a for a in order if a in table.index])
    return out


def heatmaps(runs: pd.DataFrame, metric: str, order: list[str], path: Path) -> Path:
    data = heatmap_data(runs, metric, order)
    fig, axes = plt.subplots(1, len(data), figsize=(3.2 + 2.6 * len(data), 0.45 * len(order) + 1.6),
                             squeeze=False)
    vmin = min(np.nanmin(t.values) for t in data.values())
    vmax = max(np.nanmax(t.values) for t in data.values())
    for ax, (beta, table) in zip(axes[0], data.items()):
        first = ax is axes[0][0]
        sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis_r", vmin=vmin, vmax=vmax, ax=ax,
                    cbar=ax is axes[0][-1], cbar_kws={"label": label(metric)}, yticklabels=first)
        ax.set_title(f"kl_weight = {beta:g}")
        ax.set_xlabel("latent_dim")
        ax.set_ylabel("activation" if first else "")
    fig.suptitle(f"Mean {label(metric)} over seeds (lower is better)" if metric != "probe_accuracy"
                 else f"Mean {label(metric)} over seeds", y=1.02)
    return _save(fig, path)


def box_data(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-member values of the finished members (one point per seed and cell)."""
    return runs.loc[runs["status"] == "ok", ["activation", "latent_dim", "kl_weight", "seed", metric]]


def boxes(runs: pd.DataFrame, metric: str, order: list[str], path: Path) -> Path:
    data = box_data(runs, metric)
    latents = sorted(data["latent_dim"].unique())
    fig, axes = plt.subplots(1, len(latents), figsize=(4.2 * len(latents), 0.42 * len(order) + 1.8),
                             sharey=True, squeeze=False)
    for ax, latent in zip(axes[0], latents):
        part = data[data["latent_dim"] == latent]
        sns.boxplot(part, x=metric, y="activation", order=order, ax=ax, color="#d9e6f2",
                    showfliers=False)
        sns.stripplot(part, x=metric, y="activation", order=order, ax=ax, hue="kl_weight",
                      palette="viridis", size=4, jitter=0.2, legend=ax is axes[0][-1])
        ax.set_title(f"latent_dim = {latent}")
        ax.set_xlabel(label(metric))
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="kl_weight")
    return _save(fig, path)


def curves_data(epochs: pd.DataFrame, column: str = "test_nelbo") -> pd.DataFrame:
    """Mean and 95% CI over members of `column` per activation and epoch."""
    return summarize(epochs.assign(status="ok"), column, ["activation", "epoch"])


def curves(epochs: pd.DataFrame, order: list[str], path: Path) -> Path:
    data = curves_data(epochs)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    palette = dict(zip(order, sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))))
    for act in order:
        part = data[data["activation"] == act]
        if part.empty:
            continue
        ax.plot(part["epoch"], part["mean"], label=act, color=palette[act])
        ax.fill_between(part["epoch"], part["ci_low"], part["ci_high"], color=palette[act], alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label("test_nelbo"))
    finite = data["mean"][np.isfinite(data["mean"])]
    if len(finite):
        ax.set_ylim(finite.min() - 1, np.quantile(finite, 0.9) + 2)
    ax.legend(ncol=2, fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.set_title("Learning curves: mean over cells and seeds, 95% CI band")
    return _save(fig, path)
