"""Search studies (issue 6): a sampler with a pruner through the one run loop; n_trials is
exact; workers share a search without colliding; a SIGKILL mid-cohort loses and duplicates
nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.integration.helpers import ablate, counted, killed_at, load_store, search_study, start


def _url(tmp_path, name):
    return f"sqlite:///{tmp_path / 'results' / name / 'study.db'}"


def test_search_with_median_pruner_counts_trials_and_reports_savings(tmp_path):
    # lr spans 3.5 decades, so the second cohort holds curves clearly worse than the median
    study = search_study(tmp_path, name="pruned", n_trials=10, pruner="median", cohort=5, epochs=6)
    proc = ablate("run", str(study), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    store = load_store(_url(tmp_path, "pruned"), "pruned")
    trials = counted(store)
    assert len(trials) == 10 and all(t.state.is_finished() for t in trials)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "a 3.5-decade lr range must give the median pruner something to prune"
    for t in pruned:  # pruned after reporting fewer epochs than the budget, members stopped there
        assert max(t.intermediate_values) < 6
        assert {m["status"] for m in t.user_attrs["members"]} == {"pruned"}
    out = tmp_path / "results" / "pruned"
    runs = pd.read_csv(out / "runs.csv")
    table = pd.read_csv(out / "trials.csv")
    assert len(runs) == 10 * 2 and len(table) == 10
    assert (table["state"] == "pruned").sum() == len(pruned)
    ran, full = int(runs["epochs_run"].sum()), int(runs["epochs"].sum())
    assert ran < full == 10 * 2 * 6
    report = (out / "report.md").read_text()
    assert f"It pruned {len(pruned)} of 10 trials" in report
    assert f"Members trained {ran} of the {full} member-epochs" in report
    for fig in ("history.png", "importances.png", "slices.png"):
        assert (out / "figures" / fig).stat().st_size > 5000
    # the objective is the validation NLL: each complete trial's value is its seeds' mean val_nll
    for t in trials:
        if t.state == TrialState.COMPLETE:
            mine = runs[(runs["trial"] == t.number) & (runs["status"] == "ok")]
            assert t.value == pytest.approx(mine["val_nll"].mean(), rel=1e-9)
            assert t.value != pytest.approx(mine["test_nll"].mean(), rel=1e-6)
    # a rerun has nothing left to do: the budget is spent
    again = ablate("run", str(study), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and len(counted(load_store(_url(tmp_path, "pruned"), "pruned"))) == 10


def test_two_workers_share_one_search_without_collisions(tmp_path):
    study = search_study(tmp_path, name="pair", n_trials=8, cohort=2, epochs=3)
    procs = [start("run", str(study), "--no-progress", cwd=tmp_path) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "database is locked" not in err
    trials = counted(load_store(_url(tmp_path, "pair"), "pair"))
    assert len(trials) == 8, "n_trials is a budget for all workers together"
    keys = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(keys)) == 8, "workers seeded alike would propose the same points"
    assert len({t.user_attrs["worker"] for t in trials}) == 2


def test_sigkill_mid_cohort_then_rerun_loses_and_duplicates_nothing(tmp_path):
    study = search_study(tmp_path, name="killed", n_trials=6, cohort=2, epochs=40)
    url = _url(tmp_path, "killed")
    killed_at(2, 3, "run", str(study), "--no-progress", cwd=tmp_path)  # the second cohort, training
    store = load_store(url, "killed")
    running = [t for t in store.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    assert running, "the kill must land while a cohort is training"
    done_at_kill = sum(t.state.is_finished() for t in store.get_trials(deepcopy=False))
    assert done_at_kill < 6

    rerun = ablate("run", str(study), "--no-progress", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    store = load_store(url, "killed")
    everything = store.get_trials(deepcopy=False)
    trials = counted(store)
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    keys = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(keys)) == 6, "no configuration trained twice"
    for t in running:  # the dead worker's trials were failed and their configurations re-run
        dead = everything[t.number]
        assert dead.state == TrialState.FAIL and dead.user_attrs["interrupted"]
        assert keys.count(json.dumps(dead.params, sort_keys=True)) == 1
    runs = pd.read_csv(tmp_path / "results" / "killed" / "runs.csv")
    assert len(runs) == 6 * 2 and not runs.duplicated(["trial", "seed"]).any()


@pytest.mark.parametrize("strategy,pruner", [("cmaes", "hyperband"), ("qmc", "wilcoxon"),
                                             ("tpe", "none")])
def test_every_strategy_and_pruner_runs_a_search(tmp_path, strategy, pruner):
    from ablate.analysis.report import build_report
    from ablate.run.runner import run_study
    from ablate.study.loader import load_study

    name = f"{strategy}_{pruner}"
    study = load_study(search_study(tmp_path, name=name, strategy=strategy, n_trials=6,
                                    pruner=pruner, cohort=3, epochs=4))
    out = run_study(study, tmp_path / "results", progress=False)
    build_report(study, out)
    trials = counted(load_store(_url(tmp_path, name), name))
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6
    for t in trials:
        assert 2 <= t.params["latent_dim"] <= 6 and 1e-5 <= t.params["lr"] <= 3e-2
        assert t.params["activation"] in ("relu", "tanh", "softplus")
    assert "## Search" in (out / "report.md").read_text()
