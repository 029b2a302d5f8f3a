"""Statistics on hand-made tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablate.analysis.stats import bootstrap_ci, ranking, summarize
from tests.runs import runs_table


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(10, 1, 5)
    large = rng.normal(10, 1, 200)
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < hi - lo
    assert lo2 < 10 < hi2


def test_bootstrap_edge_cases():
    assert math.isnan(bootstrap_ci([])[0])
    m, lo, hi = bootstrap_ci([3.0, float("nan")])
    assert m == 3.0 and math.isnan(lo)


def _table():
    shift = {"good": 0.0, "bad": 5.0}
    failed = {"activation": "bad", "seed": 9, "latent_dim": 2, "kl_weight": 1.0,
              "status": "failed", "test_nll": float("nan")}
    return runs_table({"activation": shift, "seed": range(4), "latent_dim": (2, 8)},
                      lambda r: {"kl_weight": 1.0,
                                 "test_nll": 100 + shift[r["activation"]] + r["seed"] * 0.1 + r["latent_dim"]},
                      extra=[failed])


def test_summarize_counts_only_finished():
    s = summarize(_table(), "test_nll", ["activation"])
    assert dict(zip(s["activation"], s["n"])) == {"bad": 8, "good": 8}


def test_ranking_orders_and_counts_failures():
    r = ranking(_table(), "test_nll", maximize=False)
    assert list(r["activation"]) == ["good", "bad"]
    assert list(r["failed"]) == [0, 1]
    assert r.loc[0, "mean"] == pytest.approx(100 + 5 + 0.15)


# ----------------------------------------------------------------------------- rank tests
from ablate.analysis.stats import blocks, claims, compare, holm, nemenyi_cd  # noqa: E402


def _grid(effects: dict[str, float], seeds: int = 5, noise: float = 1.0, seed: int = 0,
          maximize_metric: str = "test_nll") -> pd.DataFrame:
    """A grid of 3 latent sizes × 2 kl_weights × seeds; each activation's values are a shared
    per-block level (what the seed and cell do to every model) + its effect + own noise."""
    rng = np.random.default_rng(seed)
    first, level = next(iter(effects)), {}

    def fill(r):
        if r["activation"] == first:  # a new block: its shared level
            level["v"] = rng.normal(100, 5)
        return {maximize_metric: level["v"] + effects[r["activation"]] + rng.normal(0, noise)}

    return runs_table({"latent_dim": (2, 4, 8), "kl_weight": (0.5, 1.0), "seed": range(seeds),
                       "activation": effects}, fill)


def test_holm_matches_hand_computation():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])


def test_nemenyi_cd_matches_demsar_table():
    # Demšar (2006), Table 5: q_0.05 = 2.569 for k = 4 and 3.164 for k = 10.
    assert nemenyi_cd(4, 10) == pytest.approx(2.569 * math.sqrt(4 * 5 / 60), rel=1e-3)
    assert nemenyi_cd(10, 18) == pytest.approx(3.164 * math.sqrt(10 * 11 / 108), rel=1e-3)


def test_a_better_activation_by_construction_is_named_and_significant():
    runs = _grid({"relu": 0.0, "good": -3.0, "tanh": 0.0, "gelu": 0.0})
    c = compare(runs, "test_nll", ["latent_dim", "kl_weight"], maximize=False, baseline="relu")
    assert c.n_blocks == 30 and c.separable
    assert c.avg_ranks.index[0] == "good" and c.top_group == ["good"]
    row = c.versus.set_index("activation").loc["good"]
    assert row["verdict"] == "better" and row["p_holm"] < 0.001 and row["effect_r"] > 0.9
    assert row["median_diff"] == pytest.approx(-3.0, abs=0.5)
    assert set(c.versus.set_index("activation").loc[["tanh", "gelu"], "verdict"]) == {
        "no significant difference"}
    text = " ".join(claims(c))
    assert "good is best" in text and "better than relu: good" in text


def test_higher_is_better_metrics_rank_the_other_way():
    runs = _grid({"relu": 0.0, "good": 3.0, "tanh": 0.0}, maximize_metric="probe_accuracy")
    c = compare(runs, "probe_accuracy", ["latent_dim", "kl_weight"], maximize=True, baseline="relu")
    assert c.top_group == ["good"]
    assert c.versus.set_index("activation").loc["good", "verdict"] == "better"


def test_identical_distributions_are_reported_not_separable():
    runs = _grid({"relu": 0.0, "a": 0.0, "b": 0.0, "c": 0.0}, seed=3)
    c = compare(runs, "test_nll", ["latent_dim", "kl_weight"], maximize=False, baseline="relu")
    assert not c.separable and c.friedman_p > 0.05
    assert sorted(c.top_group) == ["a", "b", "c", "relu"]
    assert (c.versus["verdict"] == "no significant difference").all()
    text = " ".join(claims(c))
    assert "no significant difference between the 4 activations" in text
    assert " is best" not in text


def test_a_diverged_member_ranks_last_in_its_block():
    runs = _grid({"relu": 0.0, "a": -1.0, "b": 1.0}, seeds=1)
    hit = (runs["activation"] == "a") & (runs["latent_dim"] == 2) & (runs["kl_weight"] == 0.5)
    runs.loc[hit, ["status", "test_nll"]] = ["failed", float("nan")]
    wide = blocks(runs, "test_nll", ["latent_dim", "kl_weight"], maximize=False)
    assert len(wide) == 6 and np.isinf(wide.loc[(2, 0.5, 0), "a"])


# ----------------------------------------------------------------------------- the tuned protocol
from ablate.analysis.stats import expected_best, verdict  # noqa: E402


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_expected_best_equals_brute_force_over_every_draw(n, maximize):
    import itertools

    values = [3.0, 1.0, 4.0, 1.0, 5.0]  # a tie included
    best = max if maximize else min
    draws = [best(d) for d in itertools.product(values, repeat=n)]  # every draw with replacement
    mean, std = expected_best(values, n, maximize)
    assert mean == pytest.approx(np.mean(draws)) and std == pytest.approx(np.std(draws))


def test_expected_best_improves_with_budget_and_ignores_failed_trials():
    values = [10.0, 8.0, 12.0, float("nan"), 9.0]
    curve = [expected_best(values, n, maximize=False)[0] for n in range(1, 5)]
    assert curve[0] == pytest.approx(np.mean([10.0, 8.0, 12.0, 9.0]))
    assert all(a > b for a, b in zip(curve, curve[1:])) and curve[-1] > 8.0


def test_verdict_reports_a_change_when_tuning_flips_the_ranking():
    cells = ["latent_dim", "kl_weight"]
    fixed = compare(_grid({"relu": 0.0, "sigmoid": 4.0, "tanh": 2.0}), "test_nll", cells, False, "relu")
    flipped = compare(_grid({"relu": 2.0, "sigmoid": -2.0, "tanh": 0.0}, seed=1), "test_nll", cells, False, "relu")
    same = compare(_grid({"relu": -1.0, "sigmoid": 4.0, "tanh": 2.0}, seed=2), "test_nll", cells, False, "relu")
    changed, text = verdict(fixed, flipped)
    assert changed and text.startswith("Tuning changed the verdict: at the study's own hyperparameters "
                                       "relu is best; with each activation's own tuned hyperparameters "
                                       "sigmoid is best.")
    assert "Kendall's τ between the fixed and the tuned ranking = -1.00" in text
    changed, text = verdict(fixed, same)
    assert not changed and text.startswith("The verdict survives tuning: in both arms relu is best.")
    assert "= 1.00" in text
