"""Statistics on hand-made tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablate.analysis.stats import ranking, summarize, t_ci
from tests.runs import runs_table


def test_t_interval_equals_scipy_students_t():
    from scipy import stats as st

    x = np.array([26.03, 26.19, 26.11])
    m, lo, hi = t_ci(x)
    want = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    assert m == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(want)
    assert hi - lo > x.max() - x.min()  # wider than the seeds' range, unlike a 3-value bootstrap


def test_t_interval_edge_cases():
    assert math.isnan(t_ci([])[0])
    m, lo, hi = t_ci([3.0, float("nan")])
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
    assert row["diff"] == pytest.approx(-3.0, abs=0.5) and row["diff_low"] < row["diff"] < row["diff_high"] < 0
    assert row["decidable"] and row["p_better"] > 0.95
    assert set(c.versus.set_index("activation").loc[["tanh", "gelu"], "verdict"]) <= {
        "no significant difference", "practically equivalent"}
    text = " ".join(claims(c))
    assert "good is best" in text and "better: good" in text


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
    assert c.versus["verdict"].isin(["no significant difference", "practically equivalent"]).all()
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


# ----------------------------------------------------------------------------- what a design can tell
from ablate.analysis import evidence  # noqa: E402


def test_min_p_of_the_exact_wilcoxon_with_holm():
    assert evidence.min_signed_rank_p(3) == pytest.approx(0.25)
    assert evidence.min_signed_rank_p(6) == pytest.approx(1 / 32)
    assert evidence.min_signed_rank_p(6, m=9) == pytest.approx(9 / 32)  # quick at one kl_weight
    assert evidence.min_signed_rank_p(3, m=5) == 1.0
    assert evidence.pairs_needed(9) == 9 and evidence.min_signed_rank_p(9, 9) <= 0.05 < evidence.min_signed_rank_p(8, 9)


@pytest.mark.parametrize("d", [[0.3, -0.1, 0.5, 0.7, 0.2, 0.45], [1.0, 2.0, 3.0], [-0.2, 0.4, 0.9, -1.3, 2.2, 0.1, 0.8]])
def test_exact_signed_rank_p_equals_scipys_exact_test_without_ties(d):
    from scipy.stats import wilcoxon

    assert evidence.signed_rank_p(d) == pytest.approx(wilcoxon(d, method="exact").pvalue)


def test_exact_signed_rank_never_goes_below_its_floor_with_ties():
    assert evidence.signed_rank_p([1.0, 1.0, 1.0]) == pytest.approx(0.25)  # the normal approx says 0.1


def _versus(n_blocks: int, k: int = 10, shift: float = 1.0):
    """Blocks in which every other activation is worse than relu by `shift` ± noise."""
    rng = np.random.default_rng(0)
    acts = ["relu", *(f"a{i}" for i in range(k - 1))]
    return runs_table({"seed": range(n_blocks), "activation": acts},
                      lambda r: {"latent_dim": 2, "kl_weight": 1.0,
                                 "test_nll": (0 if r["activation"] == "relu" else shift) + rng.normal(0, 0.1)})


def test_decidable_false_at_3_blocks_and_true_at_10():
    few = compare(_versus(3), "test_nll", [], False, "relu", rope=0.1).versus
    assert not few["decidable"].any() and few["verdict"].str.startswith("cannot tell with 3 blocks (needs ≥ 9)").all()
    assert (few["p_worse"] > 0.5).all()  # the Bayesian test still sees the direction
    many = compare(_versus(10), "test_nll", [], False, "relu", rope=0.1).versus
    assert many["decidable"].all() and (many["verdict"] == "worse").all()
    assert many["min_p"].iloc[0] == pytest.approx(9 * 2.0 ** -9)
    text = " ".join(claims(compare(_versus(3), "test_nll", [], False, "relu")))
    assert "against relu (paired Wilcoxon, Holm-corrected, α = 0.05) — cannot tell with 3 blocks (needs ≥ 9)" in text


def _bayes_by_loop(d, rope, samples, seed, prior=0.5):
    """The Bayesian signed-rank test written out draw by draw (Benavoli et al. 2017, and
    baycomp's SignedRankTest.sample loop): a pseudo-observation 0 of weight `prior`, each
    draw's θ_left / θ_right summed over every pair, the region with the most mass wins."""
    z = [0.0, *d]
    draws = np.random.RandomState(seed).dirichlet([prior] + [1.0] * len(d), samples)
    wins = [0, 0, 0]
    for w in draws:
        left = right = 0.0
        for i in range(len(z)):
            for j in range(len(z)):
                s = z[i] + z[j]
                step = lambda a, b: 1.0 if a > b else 0.5 if a == b else 0.0  # noqa: E731
                left += w[i] * w[j] * step(-s, 2 * rope)
                right += w[i] * w[j] * step(s, 2 * rope)
        wins[int(np.argmax([left, 1 - left - right, right]))] += 1
    return tuple(x / samples for x in wins)


def test_bayesian_signed_rank_equals_the_draw_by_draw_definition():
    rng = np.random.default_rng(4)
    for d, rope in ((rng.normal(0.05, 0.2, 12), 0.1), (rng.normal(-0.5, 0.3, 6), 0.1), (np.array([0.1, -0.1, 0.0]), 0.05)):
        ours = evidence.bayes_signed_rank(d, rope, samples=300, seed=7)
        assert ours == pytest.approx(_bayes_by_loop(d, rope, 300, 7), abs=1e-12)
    better, same, worse = evidence.bayes_signed_rank(np.full(8, -1.0), 0.1)
    assert better > 0.99 and same + worse < 0.01
    better, same, worse = evidence.bayes_signed_rank(np.array([0.01, -0.02, 0.0, 0.015, -0.01, 0.005] * 3), 0.1)
    assert same > 0.95


def _crossing(crossover: bool, seed: int = 0) -> pd.DataFrame:
    """kl_weight 0.25, 1, 4 × latent 2, 8 × 4 seeds × 4 activations: with a crossover, tanh is
    best at 0.25 and last elsewhere; without, every activation shifts alike with kl_weight."""
    rng = np.random.default_rng(seed)
    base = {"relu": 0.0, "gelu": 0.5, "silu": 1.0, "tanh": 1.5}

    def fill(r):
        v = base[r["activation"]] + 3.0 * r["kl_weight"]
        if crossover and r["kl_weight"] == 0.25 and r["activation"] == "tanh":
            v -= 3.0
        return {"test_nll": v + rng.normal(0, 0.3)}
    return runs_table({"kl_weight": (0.25, 1.0, 4.0), "latent_dim": (2, 8), "seed": range(4),
                       "activation": list(base)}, fill)


def _stratum(runs):
    from ablate.analysis import strata

    return strata.split(runs, pd.DataFrame(), ["kl_weight", "latent_dim"], "test_nll", False, "relu")[0]


def test_interaction_test_finds_a_planted_crossover():
    s = _stratum(_crossing(True))
    i = next(i for i in s.interactions if i.axis == "kl_weight")
    assert i.p < 0.01 and i.decidable and i.best == {0.25: "tanh", 1.0: "relu", 4.0: "relu"}
    assert i.sentence().startswith("The ranking depends on kl_weight") and "tanh at 0.25, relu at 1 and 4" in i.sentence()


def test_interaction_test_ignores_a_parallel_shift():
    s = _stratum(_crossing(False))
    for i in s.interactions:
        assert i.p > 0.05 and i.kendall_w > 0.5, i
        assert i.sentence().startswith("No evidence")


def test_interaction_with_too_few_groups_says_it_cannot_tell():
    runs = _crossing(True)
    s = _stratum(runs[(runs["seed"] == 0) & (runs["latent_dim"] == 2)].assign(latent_dim=2))
    i = s.interactions[0]
    assert not i.decidable and i.min_p == 1.0 and i.sentence().startswith("Cannot tell")


def test_convergence_flags_a_still_falling_curve():
    from ablate.analysis import strata

    rows = []
    for act, slope in (("relu", 0.0), ("tanh", -2.0)):
        for seed in range(3):
            for epoch in range(1, 11):
                flat = 50 + 20 * np.exp(-epoch)  # converged by the last quarter
                rows.append({"activation": act, "seed": seed, "epoch": epoch, "kl_weight": 1.0,
                             "val_nelbo": flat + slope * epoch + 0.01 * seed})
    s = _stratum(_crossing(False))
    s.epochs = pd.DataFrame(rows)
    late = strata.convergence(s, "val_nelbo", ["kl_weight"])
    assert list(late["activation"]) == ["tanh"] and late["drop"].iloc[0] == pytest.approx(4.0, abs=0.05)


def test_friedman_by_permutation_agrees_with_scipy_and_knows_its_floor():
    from scipy.stats import friedmanchisquare, rankdata

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    x[:, 0] -= 0.7
    ranks = np.vstack([rankdata(row) for row in np.round(x, 1)])  # some ties
    stat, p, min_p = evidence.friedman_test(ranks)
    want = friedmanchisquare(*np.round(x, 1).T)
    assert stat == pytest.approx(want.statistic) and p == pytest.approx(want.pvalue, abs=0.01)
    three = np.tile([1.0, 2.0, 3.0, 4.0], (3, 1))  # 3 blocks agreeing perfectly on 4 methods
    stat, p, min_p = evidence.friedman_test(three)
    assert min_p == pytest.approx(24.0 ** -2) and p == pytest.approx(min_p, abs=1.5e-3)  # Monte Carlo


def test_the_signed_rank_p_is_exact_beyond_a_handful_of_pairs():
    from scipy.stats import wilcoxon

    d = np.random.default_rng(2).normal(0.4, 1, 40)
    assert evidence.signed_rank_p(d) == pytest.approx(wilcoxon(d, method="exact").pvalue)
    assert evidence.signed_rank_p(np.ones(18)) == pytest.approx(evidence.min_signed_rank_p(18))


def test_a_p_value_at_its_floor_is_written_as_a_bound():
    from ablate.analysis.stats import p_text

    assert p_text(0.012, 0.0001) == "p = 0.012"
    assert p_text(0.0001, 0.0001) == "p ≤ 0.0001, this test's floor"
    assert p_text(0.0317, 0.03125) == "p ≤ 0.032, this test's floor"  # Monte Carlo noise above the floor
