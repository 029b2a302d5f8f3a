"""The figures' data functions, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ablate.analysis import figures, plots
from ablate.analysis.stats import compare
from ablate.study.metrics import label
from tests.runs import runs_table

SHIFT = {"relu": 0.0, "tanh": 2.0, "gelu": 1.0}


def _runs() -> pd.DataFrame:
    def fill(r):
        act, latent, beta, seed = r["activation"], r["latent_dim"], r["kl_weight"], r["seed"]
        return {"test_nll": 10 + SHIFT[act] + seed + beta - 0.1 * latent, "test_kl": 4 / beta + seed,
                "test_recon": 20 + beta + SHIFT[act], "active_units": latent / beta,
                "mutual_info": 1 / beta, "dead_units": 0.1 if act == "relu" else 0.0,
                "train_seconds": 1.0 + seed, "kl_per_dim": [0.5 * (d + 1) + seed for d in range(latent)]}

    runs = runs_table({"activation": SHIFT, "latent_dim": (2, 4), "kl_weight": (0.5, 2.0),
                       "seed": range(2)}, fill)
    runs.insert(0, "trial", runs.index // 2)
    failed = {**runs.iloc[0].to_dict(), "seed": 7, "status": "failed", "test_nll": np.nan}
    return pd.concat([runs, pd.DataFrame([failed])], ignore_index=True)


def test_rate_distortion_data_means_over_seeds_in_kl_weight_order():
    d = figures.rate_distortion_data(_runs())
    row = d[(d["activation"] == "tanh") & (d["latent_dim"] == 2) & (d["kl_weight"] == 0.5)].iloc[0]
    assert row["test_kl"] == pytest.approx(8.5) and row["test_recon"] == pytest.approx(22.5)
    assert len(d) == 3 * 2 * 2
    assert list(d[(d["activation"] == "relu") & (d["latent_dim"] == 4)]["kl_weight"]) == [0.5, 2.0]


def test_collapse_data_has_both_measures():
    d = figures.collapse_data(_runs())
    au = d[(d["measure"] == "active_units") & (d["activation"] == "relu") & (d["latent_dim"] == 4)]
    assert list(au.sort_values("kl_weight")["mean"]) == [8.0, 2.0]
    assert set(d["measure"]) == {"active_units", "mutual_info"}


def test_kl_per_dim_data_takes_the_best_member_sorted_descending():
    d = figures.kl_per_dim_data(_runs(), "test_nll", maximize=False)
    part = d[(d["activation"] == "gelu") & (d["latent_dim"] == 4)]
    assert list(part["kl"]) == [2.0, 1.5, 1.0, 0.5] and (part["seed"] == 0).all()
    as_text = _runs().assign(kl_per_dim=lambda f: f["kl_per_dim"].map(str))  # read back from CSV
    assert figures.kl_per_dim_data(as_text, "test_nll", False).equals(d)


def test_health_data_counts_divergence_and_dead_units():
    h = figures.health_data(_runs()).set_index("activation")
    assert h.loc["relu", "diverged"] == 1 and h.loc["relu", "members"] == 9
    assert h.loc["relu", "divergence_rate"] == pytest.approx(1 / 9)
    assert h.loc["relu", "dead_units"] == pytest.approx(0.1) and h.loc["tanh", "dead_units"] == 0


def test_cd_diagram_cliques_join_only_close_ranks():
    c = compare(_runs(), "test_nll", ["latent_dim", "kl_weight"], maximize=False, baseline="relu")
    ranks, cd, cliques = figures.cd_diagram_data(c)
    assert list(ranks.index) == ["relu", "gelu", "tanh"] and list(ranks) == [1.0, 2.0, 3.0]
    # 8 blocks, k = 3: CD ≈ 1.17, so neighbours (1 apart) are joined and the ends (2 apart) not
    assert 1.0 < cd < 2.0
    assert cliques == [("relu", "gelu"), ("gelu", "tanh")]


def test_cost_data_and_showcase_members():
    runs = _runs()
    measured = {"relu": 1.0, "tanh": {"median": 2.5, "q25": 2.0, "q75": 3.0}}  # an older store's float, a new dict
    cost = figures.cost_data(runs, measured).set_index("activation")
    assert cost.loc["tanh", "ns_per_element"] == 2.5 and np.isnan(cost.loc["gelu", "ns_per_element"])
    assert cost.loc["tanh", "q75"] == 3.0 and cost.loc["relu", "q25"] == 1.0
    cell, members = figures.showcase_members(runs, "test_nll", False, ["latent_dim", "kl_weight"])
    assert cell == {"latent_dim": 4, "kl_weight": 0.5}
    assert sorted(members["activation"]) == ["gelu", "relu", "tanh"] and (members["seed"] == 0).all()


def test_the_showcased_members_are_chosen_on_validation_when_it_exists():
    runs = _runs()
    best_on_test = figures.showcase_members(runs, "test_nll", False, ["latent_dim", "kl_weight"])[1]
    # a validation NLL that ranks the seeds the other way round
    runs = runs.assign(val_nll=-runs["seed"].astype(float))
    assert figures.chosen_by(runs, "test_nll") == "val_nll"
    cell, members = figures.showcase_members(runs, "test_nll", False, ["latent_dim", "kl_weight"])
    assert (members["seed"] == 1).all() and (best_on_test["seed"] == 0).all()
    assert figures.chosen_by(runs.assign(val_nll=np.nan), "test_nll") == "test_nll"


def test_tile_lays_images_out_with_gaps():
    imgs = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)  # six 2×2 images
    out = plots._tile(imgs, (2, 2), cols=3)
    assert out.shape == (2 * 3 - 1, 3 * 3 - 1)
    assert (out[:2, :2] == imgs[0].reshape(2, 2)).all() and (out[3:5, 6:8] == imgs[5].reshape(2, 2)).all()
    assert (out[2, :] == plots.GAP).all()


@pytest.mark.parametrize("metric", ["active_units", "mutual_info", "probe_accuracy", "test_nll"])
def test_heatmap_title_says_which_way_is_better(metric, tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: titles.append(fig._suptitle.get_text()))
    runs = _runs().assign(probe_accuracy=0.5)
    plots.heatmaps(runs, metric, ["relu", "gelu", "tanh"], tmp_path / "h.png", "latent_dim", "kl_weight")
    better = "higher" if metric != "test_nll" else "lower"
    assert titles == [f"Mean {label(metric)} over seeds ({better} is better)"]


def test_tile_keeps_colour_channels_in_place():
    img = np.zeros((3, 2, 2), dtype=np.uint8)
    img[0] = 200  # a red image, stored channel-first like every dataset's rows
    out = plots._tile(np.stack([img.reshape(-1)] * 2), (3, 2, 2), cols=2)
    assert out.shape == (2, 5, 3)
    assert (out[:, :2] == [200, 0, 0]).all() and (out[:, 2] == plots.COLOUR_GAP).all()


def _drawn(monkeypatch):
    """Capture the figures a renderer would save."""
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    return figs


def test_a_lone_kl_weight_is_drawn_as_points_not_lines_and_inside_the_axes(tmp_path, monkeypatch):
    figs = _drawn(monkeypatch)
    one = _runs()[lambda r: r["kl_weight"] == 2.0]
    plots.rate_distortion(one, list(SHIFT), tmp_path / "rd.png")
    plots.collapse(one, list(SHIFT), tmp_path / "c.png")
    rd, col = figs
    assert "each activation at kl_weight 2" in rd._suptitle.get_text()
    for ax in rd.axes:
        assert not [ln for ln in ax.lines if ln.get_label() in SHIFT]  # no one-point "lines"
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        for coll in ax.collections:
            for x, y in coll.get_offsets():
                assert x0 < x < x1 and y0 < y < y1
    for ax in col.axes:  # the activations side by side, each inside the axes
        lo, hi = ax.get_xlim()
        assert lo < 0 and hi > len(SHIFT) - 1 and len(ax.get_xticks()) == len(SHIFT)
    assert [t.get_text() for t in col.axes[-1].get_xticklabels()] == list(SHIFT)
    assert "I(x; z) per activation" in col._suptitle.get_text()


def test_boxes_have_panels_only_for_an_axis_that_varies(tmp_path, monkeypatch):
    figs = _drawn(monkeypatch)
    runs = _runs()
    plots.boxes(runs, "test_nll", list(SHIFT), tmp_path / "a.png", panel="latent_dim", hue="kl_weight")
    plots.boxes(runs[runs["latent_dim"] == 2], "test_nll", list(SHIFT), tmp_path / "b.png")
    assert [ax.get_title() for ax in figs[0].axes] == ["latent_dim = 2", "latent_dim = 4"]
    assert [ax.get_title() for ax in figs[1].axes] == [""]


def test_a_gans_curves_are_its_generator_and_discriminator_losses():
    epochs = pd.DataFrame({"activation": "relu", "epoch": [1, 2], "seed": 0, "train_g_loss": [1.0, 0.9],
                           "train_d_loss": [1.3, 1.2], "val_nelbo": np.nan})
    assert figures.curve_columns(epochs) == ["train_g_loss", "train_d_loss"]
    assert figures.curve_columns(epochs.assign(train_g_loss=np.nan, train_d_loss=np.nan, val_nelbo=3.0)) == ["val_nelbo"]


def test_figures_drawn_concurrently_are_written_when_the_block_ends_and_failures_raise(tmp_path):
    import matplotlib.pyplot as plt

    def figure(n):
        fig, ax = plt.subplots()
        ax.plot(range(n))
        return fig

    with plots.concurrently():
        paths = [plots._save(figure(n), tmp_path / f"f{n}.png") for n in range(2, 6)]
    inline = plots._save(figure(3), tmp_path / "inline.png")
    assert all(p.stat().st_size > 0 for p in paths)
    assert inline.read_bytes() == paths[1].read_bytes(), "a child writes the same bytes"
    with pytest.raises(RuntimeError, match="nowhere"):
        with plots.concurrently():
            plots._save(figure(2), tmp_path / "nowhere" / "f.png")
    assert not (tmp_path / "nowhere").exists()
