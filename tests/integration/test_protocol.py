"""The tuned protocol: per-activation tuning on validation, fixed and tuned arms, the report's
verdict, and a kill during tuning that loses and duplicates nothing."""

from __future__ import annotations


import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.integration.helpers import ablate, counted, killed_at, load_store
from tests.studies import write_study

ACTIVATIONS = ("relu", "tanh", "sigmoid")


def _study(tmp_path, name: str, epochs: int, budget: int):
    """Three activations, each tuned (lr and init) with `budget` trials; two final seeds."""
    return write_study(tmp_path, name, dataset={"train_size": 240, "test_size": 60}, model={"hidden": [32]},
                       train={"epochs": epochs, "lr": 1.0e-3}, eval={"iwae_samples": 8}, seeds=None,
                       space={"activation": list(ACTIVATIONS), "latent_dim": [2]},
                       protocol={"tune": {"train.lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
                                          "model.init": ["auto", "default"]},
                                 "budget": budget, "final_seeds": 2})


def _tuning_stores(tmp_path, name: str) -> dict:
    url = f"sqlite:///{tmp_path / 'results' / name / 'study.db'}"
    return {act: load_store(url, f"{name}/tune/activation={act},latent_dim=2") for act in ACTIVATIONS}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tuned")
    proc = ablate("run", str(_study(tmp, "tuned", epochs=3, budget=4)), "--no-progress", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp


def test_each_activation_is_tuned_on_validation_with_its_budget(tuned):
    for act, store in _tuning_stores(tuned, "tuned").items():
        trials = counted(store)
        assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials), act
        for t in trials:  # one tuning seed, scored on validation, within the tuned ranges
            (member,) = t.user_attrs["members"]
            assert member["seed"] == 1_000_003 and t.value == pytest.approx(member["val_nll"])
            assert 1e-4 <= t.params["lr"] <= 3e-2 and t.params["init"] in ("auto", "default")
    tuning = pd.read_csv(tuned / "results" / "tuned" / "tuning.csv")
    assert len(tuning) == 12 and tuning.groupby("activation")["best"].sum().eq(1).all()


def test_final_arms_use_the_fixed_values_and_each_activation_s_best(tuned):
    out = tuned / "results" / "tuned"
    runs, tuning = pd.read_csv(out / "runs.csv"), pd.read_csv(out / "tuning.csv")
    assert len(runs) == 3 * 2 * 2 and set(runs["seed"]) == {0, 1}
    assert not runs.duplicated(["arm", "activation", "latent_dim", "seed"]).any()
    fixed = runs[runs["arm"] == "fixed"]
    assert (fixed["lr"] == 1e-3).all() and (fixed["init"] == "auto").all()
    best = tuning[tuning["best"]].set_index("activation")
    for _, row in runs[runs["arm"] == "tuned"].iterrows():
        assert row["lr"] == pytest.approx(best.loc[row["activation"], "lr"])
        assert row["init"] == best.loc[row["activation"], "init"]
        assert best.loc[row["activation"], "val_nll"] == tuning[
            tuning["activation"] == row["activation"]]["val_nll"].min()


def test_report_says_whether_the_verdict_survives_tuning(tuned):
    report = (tuned / "results" / "tuned" / "report.md").read_text()
    section = report.split("## Does the verdict survive tuning?")[1].split("\n## ")[0]
    assert "Kendall's τ between the fixed and the tuned ranking" in section
    assert ("Tuning changed the verdict" in section) != ("The verdict survives tuning" in section)
    assert "| activation | fixed: test_nll | tuned: test_nll | fixed: avg rank | tuned: avg rank |" in section
    assert "### Tuned values" in section and "figures/expected_best.png" in section
    setup = report.split("## Setup")[1].split("\n## ")[0]
    assert "| activation | fixed: init | tuned: init |" in setup and "auto (xavier)" in setup
    assert "216 training, 24 validation and 60 test images" in setup


def test_kill_during_tuning_then_rerun_keeps_the_budget_and_duplicates_nothing(tmp_path):
    study = _study(tmp_path, "killed", epochs=40, budget=4)
    killed_at(2, 3, "run", str(study), "--no-progress", cwd=tmp_path)  # the second tuning round
    killed = [t for s in _tuning_stores(tmp_path, "killed").values() for t in s.get_trials(deepcopy=False)
              if t.state == TrialState.RUNNING]
    assert killed, "the kill must land while tuning trials are training"

    again = ablate("run", str(study), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for act, store in _tuning_stores(tmp_path, "killed").items():
        trials = counted(store)
        assert len(trials) == 4 and all(t.state.is_finished() for t in trials), act
        failed = [t for t in store.get_trials(deepcopy=False) if t.user_attrs.get("interrupted")]
        for t in failed:  # the dead worker's trial was re-run with the same values, once (a
            # kill inside `ask` leaves only the values drawn so far; the rerun draws the rest)
            same = [u for u in trials if all(u.params.get(k) == v for k, v in t.params.items())]
            assert len(same) == 1 or not t.params
    runs = pd.read_csv(tmp_path / "results" / "killed" / "runs.csv")
    assert len(runs) == 3 * 2 * 2
    assert not runs.duplicated(["arm", "activation", "latent_dim", "seed"]).any()
