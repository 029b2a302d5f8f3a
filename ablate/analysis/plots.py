"""Drawing the figures: each renderer draws what its `*_data` function in figures.py returned
(a report computes the data once and passes it down), and writes the PNG atomically.

Owns: how each figure looks, matplotlib's state (the Agg backend and seaborn's theme, set when
this module is imported), tiling images into mosaics, and the image files. Does not own: the
numbers a figure shows (figures.py), the statistics behind them (stats.py), metric labels and
directions (metrics.py), or where the PNG ends up in a report (sections.py).

Inside `concurrently()` a figure, once built, is drawn and written by a forked child while the
report goes on: drawing and PNG encoding are half of a report's time, and they are the same
bytes whichever process does them.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ablate.analysis import figures  # noqa: E402
from ablate.files import atomic_open  # noqa: E402
from ablate.study.metrics import METRICS, label  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


_children: dict[int, Path] | None = None
"""Inside `concurrently()`: the pid of each child drawing a figure, and the PNG it writes."""


@contextmanager
def concurrently() -> Iterator[None]:
    """Figures saved inside are drawn by forked children, at most one per core at a time;
    leaving waits for every PNG and raises if one was not written. Where the platform cannot
    fork (or on macOS, where forking a process that has started threads is unsafe), figures
    are drawn in place."""
    global _children
    if not hasattr(os, "fork") or sys.platform == "darwin" or _children is not None:
        yield
        return
    _children = {}
    try:
        yield
    finally:
        failed = [_wait(pid) for pid in list(_children)]
        _children = None
    failed = [p for p in failed if p is not None]
    if failed:
        raise RuntimeError(f"drawing {failed[0]} failed (the error is printed above)")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _wait(pid: int) -> Path | None:
    """Wait for our child `pid` (never any other child of the process: a subprocess someone
    else started is theirs to reap); the PNG it failed to write, if it did."""
    _, status = os.waitpid(pid, 0)
    path = _children.pop(pid)
    return path if os.waitstatus_to_exitcode(status) != 0 else None


def _write(fig, path: Path) -> None:
    """Write atomically: two processes reporting at once never leave a half-written PNG."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")


def _save(fig, path: Path) -> Path:
    if _children is None:
        _write(fig, path)
    else:
        while len(_children) >= _cores():
            if (failed := _wait(next(iter(_children)))) is not None:  # the oldest drawing
                raise RuntimeError(f"drawing {failed} failed (the error is printed above)")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: draw, write, and leave without running the parent's exit code
            code = 0
            try:
                _write(fig, path)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        _children[pid] = path
    plt.close(fig)
    return path


def heatmaps(runs: pd.DataFrame, metric: str, order: list[str], path: Path, columns: str,
             facet: str | None = None) -> Path:
    data = figures.heatmap_data(runs, metric, order, columns, facet)
    cmap = "viridis" if METRICS[metric].higher_is_better else "viridis_r"  # dark: better
    width = max(t.shape[1] for t in data.values())
    fig, axes = plt.subplots(1, len(data), figsize=(3.2 + (1.1 + 0.8 * width) * len(data),
                                                    0.45 * len(order) + 1.6), squeeze=False)
    vmin = min(np.nanmin(t.values) for t in data.values())
    vmax = max(np.nanmax(t.values) for t in data.values())
    for ax, (value, table) in zip(axes[0], data.items()):
        first = ax is axes[0][0]
        sns.heatmap(table, annot=True, fmt=".1f", cmap=cmap, vmin=vmin, vmax=vmax, ax=ax,
                    cbar=ax is axes[0][-1], cbar_kws={"label": label(metric)}, yticklabels=first)
        if facet:
            ax.set_title(f"{facet} = {value:g}" if isinstance(value, float) else f"{facet} = {value}")
        ax.set_xlabel(columns)
        ax.set_ylabel("activation" if first else "")
    fig.suptitle(figures.heatmap_title(metric), y=1.02)
    return _save(fig, path)


def boxes(runs: pd.DataFrame, metric: str, order: list[str], path: Path, panel: str | None = None,
          hue: str | None = None) -> Path:
    """A box per activation of its members' values, its members as points (coloured by
    `hue` when given), one panel per value of `panel` when given."""
    data = figures.box_data(runs, metric, panel, hue)
    values = sorted(data[panel].unique()) if panel else [None]
    order = [a for a in order if a in set(data["activation"])]
    fig, axes = plt.subplots(1, len(values), figsize=(4.2 * len(values) + 1, 0.42 * len(order) + 1.8),
                             sharey=True, squeeze=False)
    for ax, value in zip(axes[0], values):
        part = data if panel is None else data[data[panel] == value]
        sns.boxplot(part, x=metric, y="activation", order=order, ax=ax, color="#d9e6f2",
                    showfliers=False)
        sns.stripplot(part, x=metric, y="activation", order=order, ax=ax, hue=hue,
                      palette=("viridis" if hue == "kl_weight" else "Set1") if hue else None,
                      color=None if hue else "#33557a", size=4, jitter=0.2,
                      legend=bool(hue) and ax is axes[0][-1])
        if panel:
            ax.set_title(f"{panel} = {value:g}" if isinstance(value, float) else f"{panel} = {value}")
        ax.set_xlabel(label(metric))
    if hue and axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title=hue)
    return _save(fig, path)


def curves(epochs: pd.DataFrame, order: list[str], path: Path,
           title: str = "Learning curves: mean over cells and seeds, 95% CI band") -> Path:
    columns = figures.curve_columns(epochs)
    fig, axes = plt.subplots(1, len(columns), figsize=(6.5 * len(columns) + 1, 4.5), squeeze=False)
    palette = _palette(order)
    for ax, column in zip(axes[0], columns):
        data = figures.curves_data(epochs, column)
        for act in order:
            part = data[data["activation"] == act]
            if part.empty:
                continue
            ax.plot(part["epoch"], part["mean"], label=act, color=palette[act])
            ax.fill_between(part["epoch"], part["ci_low"], part["ci_high"], color=palette[act], alpha=0.15)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label(column))
        finite = data["mean"][np.isfinite(data["mean"])]
        if len(finite) and len(columns) == 1:
            ax.set_ylim(finite.min() - 1, np.quantile(finite, 0.9) + 2)
    axes[0][-1].legend(ncol=2, fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(title)
    return _save(fig, path)


def _palette(order: list[str]) -> dict[str, tuple]:
    """Colours by name, not by place: the same activation has the same colour in every
    figure of a report whatever each figure's order."""
    names = sorted(order)
    if len(names) <= 10:
        colours = sns.color_palette("tab10", len(names))
    elif len(names) <= 20:  # tab20's ten dark shades first, then its light ones: no two alike
        pairs = sns.color_palette("tab20", 20)
        colours = (pairs[0::2] + pairs[1::2])[:len(names)]
    else:
        colours = sns.color_palette("husl", len(names))
    return dict(zip(names, colours))


def _markers(order: list[str]) -> dict[str, str]:
    """Markers by name (as colours): lines of many activations stay apart in greyscale too."""
    return {name: "osD^vP*Xph<>"[i % 12] for i, name in enumerate(sorted(order))}


def rate_distortion(runs: pd.DataFrame, order: list[str], path: Path) -> Path:
    data = figures.rate_distortion_data(runs)
    latents = sorted(data["latent_dim"].unique())
    fig, axes = plt.subplots(1, len(latents), figsize=(4.6 * len(latents) + 1.5, 4.2), squeeze=False)
    pal = _palette(order)
    betas = sorted(data["kl_weight"].unique())
    markers = dict(zip(betas, "osD^vP*X"))
    for ax, latent in zip(axes[0], latents):
        part = data[data["latent_dim"] == latent]
        for act in order:
            line = part[part["activation"] == act]
            if line.empty:
                continue
            if len(line) > 1:  # a line only where there is more than one point to join
                ax.plot(line["test_kl"], line["test_recon"], color=pal[act], lw=1.2, label=act)
            for _, r in line.iterrows():
                ax.scatter(r["test_kl"], r["test_recon"], color=pal[act], s=22,
                           marker=markers.get(r["kl_weight"], "o"), zorder=3)
        lo = min(part["test_kl"].min(), 0.0)
        span = part["test_kl"].max() + part["test_recon"].max()
        xs = np.linspace(lo, part["test_kl"].max(), 2)
        for elbo in np.quantile(part["test_kl"] + part["test_recon"], [0.1, 0.5, 0.9]):
            ax.plot(xs, elbo - xs, color="0.75", lw=0.8, ls=":", zorder=0)  # equal-ELBO lines
        pad_y = max(0.08 * float(np.ptp(part["test_recon"])), 0.01 * span, 0.5)
        pad_x = max(0.08 * float(np.ptp(part["test_kl"])), 0.5)
        ax.set_ylim(part["test_recon"].min() - pad_y, part["test_recon"].max() + pad_y)
        ax.set_xlim(part["test_kl"].min() - pad_x, part["test_kl"].max() + pad_x)
        ax.set_title(f"latent_dim = {latent}")
        ax.set_xlabel("rate: test KL (nats/image)")
        ax.set_ylabel("distortion: test reconstruction (nats/image)")
    handles = [plt.Line2D([], [], color=pal[a], label=a) for a in order if a in set(data["activation"])]
    handles += [plt.Line2D([], [], color="0.3", marker=markers[b], ls="", label=f"kl_weight {b:g}")
                for b in betas]
    axes[0][-1].legend(handles=handles, fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Rate–distortion: " + ("one line per activation across kl_weight" if len(betas) > 1
                                         else f"each activation at kl_weight {betas[0]:g}")
                 + " (dotted: equal −ELBO)", y=1.02)
    return _save(fig, path)


def collapse(runs: pd.DataFrame, order: list[str], path: Path) -> Path:
    data = figures.collapse_data(runs).dropna(subset=["mean"])
    latents = sorted(data["latent_dim"].unique())
    fig, axes = plt.subplots(2, len(latents), figsize=(4.4 * len(latents) + 1.5, 7.2), squeeze=False,
                             sharex=True)
    pal = _palette(order)
    single = data["kl_weight"].nunique() <= 1  # one kl_weight: the activations side by side instead
    for col, latent in enumerate(latents):
        for row, measure in enumerate(("active_units", "mutual_info")):
            ax = axes[row][col]
            part = data[(data["latent_dim"] == latent) & (data["measure"] == measure)]
            for i, act in enumerate(order):
                line = part[part["activation"] == act]
                if line.empty:
                    continue
                err = np.vstack([line["mean"] - line["ci_low"], line["ci_high"] - line["mean"]])
                err = np.where(np.isfinite(err), np.maximum(err, 0.0), 0.0)  # a clipped interval may sit on its mean
                x = np.full(len(line), i) if single else line["kl_weight"]
                ax.errorbar(x, line["mean"], yerr=err, color=pal[act], marker="o", ms=3.5,
                            lw=1.1 if len(line) > 1 else 0, elinewidth=1.1, capsize=2, label=act)
            if single:
                ax.set_xticks(range(len(order)), order if row == 1 else [], rotation=45, ha="right")
            else:
                _beta_axis(ax, sorted(part["kl_weight"].unique()))
            if measure == "active_units":
                ax.axhline(latent, color="0.7", ls=":", lw=1)
                ax.set_title(f"latent_dim = {latent}")
            ax.set_ylabel(label(measure))
            ax.set_xlabel(("" if single else "kl_weight") if row == 1 else "")
    if not single:
        axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    against = "per activation" if single else "vs kl_weight"
    fig.suptitle(f"Posterior collapse: active units (dotted: latent_dim) and I(x; z) {against}, "
                 "mean and 95% CI over seeds", y=1.01)
    return _save(fig, path)


KL_FLOOR = 1e-4  # KL per dim is drawn on a log axis; smaller values sit on this floor


def kl_per_dim(runs: pd.DataFrame, metric: str, maximize: bool, order: list[str], path: Path,
               by_latent: bool = True) -> Path:
    data = figures.kl_per_dim_data(runs, metric, maximize, by_latent)
    panels = sorted(data["panel"].unique(), key=str)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 1.5, 3.8), squeeze=False)
    pal = _palette(order)
    for ax, panel in zip(axes[0], panels):
        part = data[data["panel"] == panel]
        latent = int(part["latent_dim"].max())
        for act in order:
            line = part[part["activation"] == act]
            if not line.empty:
                ax.plot(line["dim"], line["kl"].clip(lower=KL_FLOOR), marker="o", ms=3,
                        color=pal[act], label=act)
        ax.axhline(0.01, color="0.5", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(KL_FLOOR * 0.7, max(1.0, float(part["kl"].max()) * 1.5) if len(part) else 1.0)
        ax.set_xticks(range(1, int(latent) + 1))
        ax.set_title(f"latent_dim = {latent}" if by_latent else "each activation's own latent_dim")
        ax.set_xlabel("latent dimension (sorted by KL)")
        ax.set_ylabel("KL (nats/image)")
    axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("KL per latent dimension of each activation's best member "
                 f"(dotted: 0.01; values below {KL_FLOOR:g} drawn at it)", y=1.03)
    return _save(fig, path)


def health(health: pd.DataFrame, order: list[str], path: Path) -> Path:
    """Draws `health_data`'s table."""
    data = health.set_index("activation").reindex(order).reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.36 * len(order) + 1.8), sharey=True)
    y = np.arange(len(data))
    err = np.vstack([data["dead_units"] - data["ci_low"], data["ci_high"] - data["dead_units"]])
    axes[0].barh(y, data["dead_units"].fillna(0), xerr=np.where(np.isfinite(err), np.maximum(err, 0), 0),
                 color="#7a9cc6", capsize=2)
    axes[0].set_yticks(y, data["activation"])
    axes[0].invert_yaxis()
    axes[0].set_xlabel("dead hidden units (fraction), mean and 95% CI")
    axes[0].set_xlim(0, max(0.05, float(np.nanmax(data["ci_high"].fillna(data["dead_units"]).fillna(0))) * 1.15))
    axes[1].barh(y, data["divergence_rate"], color="#d1495b")
    for yi, (d, m) in enumerate(zip(data["diverged"], data["members"])):
        axes[1].text(data["divergence_rate"].iloc[yi] + 0.01, yi, f"{d}/{m}", va="center", fontsize=8)
    axes[1].set_xlim(0, max(0.1, float(data["divergence_rate"].max()) * 1.3))
    axes[1].set_xlabel("members that diverged (NaN/inf)")
    fig.suptitle("Dead units and divergence per activation", y=1.02)
    return _save(fig, path)


def cd_diagram(comparison, path: Path) -> Path:
    ranks, cd, cliques = figures.cd_diagram_data(comparison)
    k = len(ranks)
    half = (k + 1) // 2
    bar_gap, label_gap = 0.22, 0.42
    first_label = -0.45 - bar_gap * max(1, len(cliques))
    bottom = first_label - label_gap * (half - 1) - 0.4
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.55 * (2.2 - bottom)))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(bottom, 2.0)
    ax.axis("off")
    ax.hlines(0, 1, k, color="k", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.18, color="k", lw=1)
        ax.text(r, 0.3, str(r), ha="center", fontsize=9)
    if np.isfinite(cd):
        ax.hlines(1.25, 1, 1 + cd, color="k", lw=2)
        ax.vlines([1, 1 + cd], 1.15, 1.35, color="k", lw=1)
        ax.text(1 + cd / 2, 1.45, f"CD = {cd:.2f}", ha="center", fontsize=9)
    for i, (name, r) in enumerate(ranks.items()):
        left = i < half
        y = first_label - (i if left else k - 1 - i) * label_gap
        x_text = 0.7 if left else k + 0.3
        ax.plot([r, r, x_text], [0, y, y], color="0.35", lw=0.8)
        ax.text(x_text + (-0.05 if left else 0.05), y, f"{name} ({r:.2f})",
                ha="right" if left else "left", va="center", fontsize=9)
    for n, (a, b) in enumerate(cliques):
        y = -0.3 - bar_gap * n
        ax.hlines(y, ranks[a] - 0.06, ranks[b] + 0.06, color="#d1495b", lw=4, zorder=3)
    ax.set_title(f"Critical difference diagram: average rank on {label(comparison.metric)} "
                 "(1 = best)\nred bars join activations the Nemenyi test cannot separate "
                 f"(α = {comparison.alpha:g})", fontsize=10)
    return _save(fig, path)


def interaction(data: pd.DataFrame, axis: str, order: list[str], title: str, path: Path) -> Path:
    """Average rank per slice, one line per activation: crossing lines are an interaction."""
    values = sorted(data["value"].unique())
    x = {v: i for i, v in enumerate(values)}
    pal, marks = _palette(order), _markers(order)
    fig, ax = plt.subplots(figsize=(1.6 * len(values) + 4.5, 4.6))
    for act in order:
        line = data[data["activation"] == act].sort_values("value")
        if len(line):
            ax.plot([x[v] for v in line["value"]], line["avg_rank"], marker=marks[act], color=pal[act], label=act)
    ax.set_xticks(range(len(values)), [f"{v:g}" if isinstance(v, float) else str(v) for v in values])
    ax.set_xlim(-0.4, len(values) - 0.6)
    ax.invert_yaxis()
    ax.set_xlabel(axis)
    ax.set_ylabel("average rank (1 = best)")
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.set_title(textwrap.fill(title, 72), fontsize=10)
    return _save(fig, path)


def cost(cost: pd.DataFrame, order: list[str], path: Path) -> Path:
    """Draws `cost_data`'s table."""
    data = cost.set_index("activation").reindex(order).reset_index()
    fig, ax = plt.subplots(figsize=(7, 0.34 * len(order) + 1.5))
    y = np.arange(len(data))
    err = np.vstack([data["ns_per_element"] - data["q25"], data["q75"] - data["ns_per_element"]])
    ax.barh(y, data["ns_per_element"], xerr=np.where(np.isfinite(err), np.maximum(err, 0), 0), color="#c9a66b", capsize=2)
    for yi, v in enumerate(data["ns_per_element"]):
        ax.text(v, yi, f" {v:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, data["activation"])
    ax.invert_yaxis()
    ax.set_xlabel("activation forward + backward, ns per element: median, bar 25th–75th percentile")
    ax.set_title("Cost of each activation itself, per element (the layers around it: params, FLOPs in Results)", fontsize=10)
    return _save(fig, path)


GAP = 40  # gap between tiled images: light grey on the white (0) background of gray_r
COLOUR_GAP = 255  # between colour images: white


def _tile(images: np.ndarray, shape: tuple[int, ...], cols: int) -> np.ndarray:
    """(n, C·H·W) uint8 → one mosaic with `cols` columns and 1-pixel gaps: (H', W') for one
    channel, (H', W', 3) for colour. `shape` is (C, H, W), or (H, W) for one channel."""
    ch, h, w = shape if len(shape) == 3 else (1, *shape)
    rows = math.ceil(len(images) / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, ch), GAP if ch == 1 else COLOUR_GAP,
                  dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = img.reshape(ch, h, w).transpose(1, 2, 0)
    return out[..., 0] if ch == 1 else out


def _show(ax, mosaic: np.ndarray) -> None:
    """One channel as ink on paper (gray_r); colour as it is."""
    if mosaic.ndim == 2:
        ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")


def image_table(rows: list[tuple[str, np.ndarray]], shape: tuple[int, int, int], title: str,
                path: Path, originals: np.ndarray | None = None) -> Path:
    """One row of images per activation (first row: the originals, when given)."""
    if originals is not None:
        rows = [("original", originals)] + rows
    cols = max(len(imgs) for _, imgs in rows)
    h, w = shape[-2:]
    fig, axes = plt.subplots(len(rows), 1, squeeze=False,
                             figsize=(cols * 0.7 + 1.6, len(rows) * 0.7 * h / w + 0.5),
                             gridspec_kw={"hspace": 0.08})
    for ax, (name, imgs) in zip(axes[:, 0], rows):
        _show(ax, _tile(imgs, shape, cols))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].set_title(title, fontsize=10)
    return _save(fig, path)


def sample_grid(images: np.ndarray, shape: tuple[int, int, int], title: str, path: Path) -> Path:
    """uint8 images (n, C·H·W) as one square-ish mosaic (`ablate sample`)."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    h, w = shape[-2:]
    side = max(2.0, min(8.0, 0.45 * cols * w / 8))
    fig, ax = plt.subplots(figsize=(side, side * rows * h / (cols * w) + 0.4))
    _show(ax, _tile(images, shape, cols))
    ax.axis("off")
    ax.set_title(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


def manifolds(rows: list[tuple[str, np.ndarray]], shape: tuple[int, int, int], title: str,
              path: Path) -> Path:
    side = figures.manifold_side(rows)
    cols = min(5, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, imgs) in zip(axes.flat, rows):
        _show(ax, _tile(imgs, shape, side))
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def disentanglement(data: pd.DataFrame, order: list[str], path: Path) -> Path:
    """`disentanglement_data`: one panel per metric, each activation's mean and CI against
    kl_weight (or, without one, per activation)."""
    measures = list(dict.fromkeys(data["measure"]))
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures) + 1.6, 3.8), squeeze=False)
    pal, marks = _palette(order), _markers(order)
    by_beta = "kl_weight" in data
    for ax, measure in zip(axes[0], measures):
        part = data[data["measure"] == measure].dropna(subset=["mean"])
        for i, act in enumerate(order):
            line = part[part["activation"] == act]
            if line.empty:
                continue
            err = np.vstack([line["mean"] - line["ci_low"], line["ci_high"] - line["mean"]])
            err = np.where(np.isfinite(err), np.maximum(err, 0.0), 0.0)
            x = line["kl_weight"] if by_beta else np.full(len(line), i)
            ax.errorbar(x, line["mean"], yerr=err, color=pal[act], marker=marks[act], ms=4,
                        lw=1.1 if len(line) > 1 else 0, elinewidth=1.1, capsize=2, label=act)
        if by_beta:
            _beta_axis(ax, sorted(data["kl_weight"].dropna().unique()))
            ax.set_xlabel("kl_weight")
        else:
            ax.set_xticks(range(len(order)), order, rotation=40, ha="right")
        ax.set_ylim(bottom=0.0)
        ax.set_title(label(measure), fontsize=10)
    axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Disentanglement (test split), mean and 95% CI over seeds", y=1.02)
    return _save(fig, path)


def _beta_axis(ax, betas: list[float]) -> None:
    """A log kl_weight axis ticked at the study's values (a lone value sits in the middle)."""
    if betas and min(betas) > 0:
        ax.set_xscale("log")
        ax.set_xlim(min(betas) / 1.6, max(betas) * 1.6)
        ax.set_xticks(betas, [f"{b:g}" for b in betas])
        ax.minorticks_off()


def traversals(rows: list[tuple[str, np.ndarray, int]], shape: tuple[int, int, int], path: Path,
               original: np.ndarray | None = None) -> Path:
    """(activation, images (latent_dim · steps, D), latent_dim) → one mosaic per activation:
    a row per latent dimension, its steps left to right, after the traversed test image
    (`original`, when given) at the head of every row."""
    cols = min(4, len(rows))
    nrows = math.ceil(len(rows) / cols)
    h, w = shape[-2:]
    tallest = max(dims for _, _, dims in rows)
    steps = len(rows[0][1]) // rows[0][2]
    width = steps + (original is not None)
    fig, axes = plt.subplots(nrows, cols, squeeze=False,
                             figsize=(cols * (0.32 * width + 0.4), nrows * (0.32 * tallest * h / w + 0.5)))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, imgs, dims) in zip(axes.flat, rows):
        if original is not None:  # each row: the original, then its dimension's steps
            imgs = np.concatenate([np.concatenate([original[None], imgs[d * steps:(d + 1) * steps]])
                                   for d in range(dims)])
        _show(ax, _tile(imgs, shape, width))
        ax.set_title(name, fontsize=9)
    fig.suptitle("Latent traversals: one row per latent dimension"
                 + (" (first column: the test image traversed)" if original is not None else ""), fontsize=10)
    return _save(fig, path)


def rank_comparison(ranks: pd.DataFrame, path: Path) -> Path:
    """ranks: activation × study average ranks → one line per study across activations."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(ranks), 4.0))
    x = np.arange(len(ranks))
    for study, color in zip(ranks.columns, sns.color_palette("Set1", len(ranks.columns))):
        ax.plot(x, ranks[study], marker="o", color=color, label=study)
    ax.set_xticks(x, ranks.index, rotation=40, ha="right")
    ax.invert_yaxis()
    ax.set_ylabel("average rank (1 = best)")
    ax.legend(title="study", fontsize=8)
    ax.set_title("Average rank of each activation per study")
    return _save(fig, path)


def history(trials: pd.DataFrame, objective: str, maximize: bool, order: list[str], path: Path) -> Path:
    data = figures.history_data(trials, objective, maximize)
    palette = _palette(order)
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    done = data[data["state"] == "complete"]
    for act in order:
        part = done[done["activation"] == act]
        if not part.empty:
            ax.scatter(part["trial"], part[objective], s=22, color=palette[act], label=act, zorder=3)
    pruned = data[data["state"] == "pruned"]
    if not pruned.empty:
        ax.scatter(pruned["trial"], pruned["value"], marker="x", s=26, color="#777777", zorder=2,
                   label="pruned (last per-epoch value)")
    ax.step(data["trial"], data["best_so_far"], where="post", color="#1b1f24", lw=1.4,
            label="best so far", zorder=4)
    finite = pd.concat([done[objective], pruned["value"]]).replace([np.inf, -np.inf], np.nan).dropna()
    if len(finite) > 3:  # keep the frontier readable: clip the worst outliers
        lo, hi = finite.min(), np.quantile(finite, 0.95)
        pad = (hi - lo) * 0.08 or 1.0
        ax.set_ylim((lo - pad, hi + pad) if not maximize else (np.quantile(finite, 0.05) - pad, finite.max() + pad))
    ax.set_xlabel("trial (order asked)")
    ax.set_ylabel(label(objective))
    ax.legend(fontsize=8, ncol=1, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.set_title("Optimization history: each trial's mean over seeds")
    return _save(fig, path)


def importances(values: dict[str, float], path: Path) -> Path:
    names = list(values)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.3))
    ax.barh(names, [values[n] for n in names], color="#2f6690")
    for y, n in enumerate(names):
        ax.text(values[n] + 0.01, y, f"{values[n]:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, max(1.0, max(values.values()) * 1.15) if values else 1.0)
    ax.set_xlabel("importance (fANOVA, share of the objective's variance)")
    ax.set_title("Parameter importances")
    return _save(fig, path)


def slices(trials: pd.DataFrame, objective: str, maximize: bool, params: dict[str, bool],
           order: list[str], path: Path) -> Path:
    """The objective against each searched range (log axes where the range is log), one
    colour per activation: where in the space each activation does well."""
    palette = _palette(order)
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params) + 1.5, 4), squeeze=False,
                             sharey=True)
    for ax, (param, log) in zip(axes[0], params.items()):
        data = figures.slices_data(trials, objective, param)
        for act in order:
            part = data[data["activation"] == act]
            if not part.empty:
                ax.scatter(part[param], part[objective], s=20, color=palette[act], label=act)
        if log:  # plain numbers at 1-2-5 steps, not 2×10⁰-style minor labels
            ax.set_xscale("log")
            lo, hi = data[param].min(), data[param].max()
            ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                     for m in (1, 2, 5) if lo / 1.5 <= m * 10.0 ** e <= hi * 1.5]
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(param)
    axes[0][0].set_ylabel(label(objective))
    values = trials.loc[trials["state"] == "complete", objective].dropna()
    if len(values) > 3:  # the interesting end in full, the worst 5% clipped
        pad = 0.05 * (values.max() - values.min()) or 0.3
        axes[0][0].set_ylim((np.quantile(values, 0.05) - pad, values.max() + pad) if maximize
                            else (values.min() - pad, np.quantile(values, 0.95) + pad))
    handles, labels_ = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels_, fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Objective against each searched parameter (complete trials)", y=1.02)
    return _save(fig, path)


def expected_best(data: pd.DataFrame, order: list[str], objective: str, path: Path) -> Path:
    """Draws `expected_best_data`: one panel per cell, one line and band per activation."""
    panels = list(dict.fromkeys(data["panel"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.5, 4), squeeze=False,
                             sharey=True)
    pal = _palette(order or sorted(set(data["activation"])))
    for ax, panel in zip(axes[0], panels):
        part = data[data["panel"] == panel]
        for act in pal:
            line = part[part["activation"] == act]
            if not line.empty:
                ax.plot(line["n"], line["mean"], color=pal[act], marker="o", ms=3, label=act)
                ax.fill_between(line["n"], line["low"], line["high"], color=pal[act], alpha=0.12)
        ax.set_xlabel("tuning trials (budget)")
        ax.set_title(panel if panel != "all" else "")
    axes[0][0].set_ylabel(f"expected best {label(objective)}")
    axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Expected best validation score against the tuning budget (Dodge et al. 2019)", y=1.02)
    return _save(fig, path)


def pair_heatmap(table: pd.DataFrame, metric: str, path: Path) -> Path:
    """Mean metric per encoder (rows) × decoder (columns) activation; dark is better."""
    cmap = "viridis" if METRICS[metric].higher_is_better else "viridis_r"
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(table.columns), 0.55 * len(table) + 1.4))
    sns.heatmap(table, annot=True, fmt=".2f", cmap=cmap, ax=ax, cbar_kws={"label": label(metric)})
    ax.set_xlabel("decoder activation")
    ax.set_ylabel("encoder activation")
    ax.set_title(figures.heatmap_title(metric))
    return _save(fig, path)


def learned_shapes(data: dict, path: Path) -> Path:
    """One panel per learnable activation (and side): its initial shape dashed, its learned
    shape per layer (mean over members, band: their range)."""
    fig, axes = plt.subplots(1, len(data), figsize=(3.4 * len(data), 3.2), squeeze=False)
    for ax, ((act, side), d) in zip(axes[0], sorted(data.items(), key=lambda kv: (kv[0][0], not kv[0][1].startswith("encoder"), kv[0][1]))):
        ax.plot(d["x"], d["init"], "k--", lw=1.2, label="initial")
        for layer, color in zip(range(len(d["mean"])), sns.color_palette("tab10", len(d["mean"]))):
            ax.plot(d["x"], d["mean"][layer], color=color, label=f"layer {layer + 1}")
            ax.fill_between(d["x"], d["low"][layer], d["high"][layer], color=color, alpha=0.2)
        ax.set_title(f"{act} ({side})")
        ax.set_xlabel("x")
        ax.axhline(0, color="0.8", lw=0.6, zorder=0)
    axes[0][0].set_ylabel("f(x)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    return _save(fig, path)


def learning(trace: pd.DataFrame, path: Path) -> Path:
    """One row per learnable activation, one panel per layer it follows: β (acon, meta_acon) or
    each base's mixture weight (blend) per epoch, mean over members, band: their range."""
    acts = list(dict.fromkeys(trace["activation"]))
    cols = max(trace[trace["activation"] == a]["layer"].nunique() for a in acts)
    fig, axes = plt.subplots(len(acts), cols, figsize=(3.3 * cols + 1.6, 2.8 * len(acts)),
                             squeeze=False, sharex=True)
    for row, act in zip(axes, acts):
        part = trace[trace["activation"] == act]
        quantities = list(dict.fromkeys(part["quantity"]))
        colors = dict(zip(quantities, sns.color_palette("tab10", len(quantities))))
        layers = list(dict.fromkeys(part["layer"]))
        for ax, layer in zip(row, layers):
            for q in quantities:
                line = part[(part["layer"] == layer) & (part["quantity"] == q)].sort_values("epoch")
                ax.plot(line["epoch"], line["mean"], color=colors[q], label=q)
                ax.fill_between(line["epoch"], line["low"], line["high"], color=colors[q], alpha=0.2)
            ax.set_title(f"{act}: {layer}", fontsize=10)
            start = part[(part["layer"] == layer) & (part["epoch"] == part["epoch"].min())]["mean"]
            for v in start:  # where each line began: a small axis makes a small move look large
                ax.axhline(v, color="0.6", ls=":", lw=0.8, zorder=0)
        for ax in row[len(layers):]:
            ax.axis("off")
        row[0].set_ylabel("β" if quantities == ["β"] else "mixture weight")
        if quantities != ["β"]:
            row[len(layers) - 1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    return _save(fig, path)


def gradient_flow(flow: pd.DataFrame, order: list[str], path: Path) -> Path:
    """One panel per layer (in the order recorded): each activation's mean gradient norm per
    epoch, on a log scale."""
    layers = list(dict.fromkeys(flow["layer"]))
    n = len(layers)  # rows of up to three: six layers side by side were too small to read
    cols = n if n <= 3 else 2 if n == 4 else 3
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.5, 3.4 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.4)  # a row's titles clear the tick labels above
    palette = _palette(order)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        part = flow[flow["layer"] == layer]
        for act in order:
            line = part[part["activation"] == act]
            if not line.empty:
                ax.plot(line["epoch"], line["grad"], label=act, color=palette[act])
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: no crowding
        ax.set_title(layer)
    for i, ax in enumerate(axes.flat[:n]):
        if i + cols >= n:  # no panel below it
            ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel("gradient norm")
    axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, path)
