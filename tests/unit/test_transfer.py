"""Does the verdict transfer across datasets? Known answers: the same ranking on every dataset,
a reversed one, and the Demšar floor of the Friedman test over few datasets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ablate.analysis import strata, transfer
from tests.runs import runs_table

ACTS = {"relu": 0.0, "gelu": 1.0, "tanh": 2.0, "silu": 3.0}


def _runs(reversed_on: set[str], datasets=("digits", "sprites", "patches"), seed: int = 0) -> pd.DataFrame:
    """Four activations × kl_weight 1, 4 × 4 seeds on each dataset, in that dataset's own units
    (× 10 on sprites); on the datasets in `reversed_on` the order of the activations flips."""
    rng = np.random.default_rng(seed)

    def fill(r):
        effect = ACTS[r["activation"]] * (-1 if r["dataset"] in reversed_on else 1)
        scale = 10.0 if r["dataset"] == "sprites" else 1.0
        return {"test_recon": scale * (50 + effect + r["kl_weight"] + rng.normal(0, 0.2))}
    return runs_table({"dataset": datasets, "kl_weight": (1.0, 4.0), "seed": range(4),
                       "activation": list(ACTS)}, fill)


def _transfers(runs: pd.DataFrame) -> list[transfer.Transfer]:
    found = strata.split(runs, pd.DataFrame(), ["dataset", "kl_weight"], "test_recon", False, "relu")
    assert [s.key for s in found] == [{"dataset": d} for d in sorted(set(runs["dataset"]))]
    return transfer.transfers(found)


def test_the_same_ranking_everywhere_transfers():
    (t,) = _transfers(_runs(set()))
    assert list(t.pooled.index) == list(ACTS) and t.pooled.iloc[0] == 1.0
    assert (t.tau.values == 1.0).all()
    assert t.interaction.p > 0.05 and t.interaction.sentence().startswith("No evidence")
    assert t.friedman_min_p == pytest.approx((1 / 24) ** 2) and t.friedman_p < 0.05  # three datasets can tell four apart
    assert 2 < t.cd < 3 and "3 of 4 activations lie within it of the best over datasets, relu" in t.sentence()
    assert t.sentence().endswith("only silu ranks separably below it.")  # 3 ranks behind, beyond the CD
    table = transfer.transfer_table([t])
    assert list(table["activation"]) == list(ACTS) and set(table["avg_rank_sprites"]) == {1.0, 2.0, 3.0, 4.0}


def test_a_reversed_dataset_is_an_interaction_and_a_negative_tau():
    (t,) = _transfers(_runs({"patches"}))
    assert t.tau.loc["digits", "patches"] == -1.0 and t.tau.loc["digits", "sprites"] == 1.0
    assert t.interaction.p < 0.01 and t.interaction.best == {"digits": "relu", "sprites": "relu",
                                                             "patches": "silu"}
    assert t.interaction.sentence().startswith("The ranking depends on dataset")


def test_two_datasets_cannot_carry_a_friedman_verdict_over_three_activations():
    runs = _runs(set(), datasets=("digits", "sprites"))
    (t,) = _transfers(runs[runs["activation"] != "silu"])
    assert t.friedman_min_p == pytest.approx(1 / 6) and "needs more datasets" in t.sentence()


def test_strata_that_differ_in_more_than_the_dataset_are_grouped_apart():
    runs = pd.concat([_runs(set()).assign(family="vae"), _runs({"patches"}, seed=1).assign(family="ae")])
    found = strata.split(runs, pd.DataFrame(), ["family", "dataset", "kl_weight"], "test_recon", False, "relu")
    groups = transfer.transfers(found)
    assert [t.key for t in groups] == [{"family": "ae"}, {"family": "vae"}]
    assert groups[0].interaction.p < 0.01 and groups[1].interaction.p > 0.05


def test_the_tuned_protocol_gives_each_dataset_its_own_verdict():
    from types import SimpleNamespace

    from ablate.analysis import protocol

    runs = pd.concat([_runs(set(), datasets=("digits", "sprites")).assign(arm=arm) for arm in ("fixed", "tuned")])
    found = strata.split(runs, pd.DataFrame(), ["arm", "dataset", "kl_weight"], "test_recon", False, "relu")
    pairs = protocol.arm_pairs(SimpleNamespace(strata=found))
    assert [name for name, _ in pairs] == ["dataset = digits", "dataset = sprites"]
    assert all(set(arms) == {"fixed", "tuned"} for _, arms in pairs)
    sentences = protocol.verdict_sentences(SimpleNamespace(strata=found))
    assert [s.split(":")[0] for s in sentences] == ["Dataset = digits", "Dataset = sprites"]
