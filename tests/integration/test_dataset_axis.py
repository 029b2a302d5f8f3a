"""`dataset` as an axis: every member trains and is measured on its own dataset's splits, cohorts
never mix datasets, a member alone equals the member in a two-dataset study, and the report
speaks per dataset, across datasets and of disentanglement where the data have factors."""

from __future__ import annotations

import pandas as pd
import pytest

from ablate.analysis.report import build_report
from ablate.errors import UserError
from ablate.run.runner import run_study
from ablate.study.loader import load_study
from tests.studies import write_study

SPRITES = {"name": "sprites", "scales": 2, "orientations": 4, "n_train": 240, "n_test": 90}
DIGITS = {"name": "digits", "train_size": 240, "test_size": 60}
CHANGES = {"dataset": None, "model": {"hidden": [16], "latent_dim": 3}, "seeds": 2,
           "train": {"epochs": 2, "batch_size": 64}, "eval": {"iwae_samples": 4, "dci_estimators": 5}}
METRIC_COLUMNS = ["test_nelbo", "test_nll", "active_units", "probe_accuracy", "mig", "sap",
                  "dci_disentanglement", "val_mig", "val_dci_informativeness"]


def _run(tmp_path, name: str, datasets: list) -> pd.DataFrame:
    path = write_study(tmp_path, name, space={"activation": ["relu", "tanh", "elu"], "dataset": datasets,
                                              "kl_weight": [0.5, 2.0]}, **CHANGES)
    study = load_study(path)
    out = run_study(study, tmp_path / "results", progress=False)
    build_report(study, out)
    return pd.read_csv(out / "runs.csv")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("axis")
    return tmp / "results" / "both", _run(tmp, "both", [DIGITS, SPRITES])


def test_cohorts_hold_one_dataset_and_each_member_its_own_splits(both):
    _, runs = both
    assert set(runs["dataset"]) == {"digits", "sprites"} and (runs["status"] == "ok").all()
    assert (runs.groupby("cohort")["dataset"].nunique() == 1).all()
    digits, sprites = runs[runs["dataset"] == "digits"], runs[runs["dataset"] == "sprites"]
    assert digits["mig"].isna().all() and sprites["mig"].notna().all()  # factors: sprites only
    assert sprites[["sap", "dci_disentanglement", "val_mig"]].notna().all().all()
    assert sprites["factor_accuracy"].str.count(",").eq(4).all() and digits["factor_accuracy"].isna().all()
    assert "val_factor_accuracy" not in runs  # per factor: the test split only
    assert digits["test_nelbo"].median() < sprites["test_nelbo"].median() / 3  # 64 vs 1024 pixels


def test_a_member_alone_equals_the_member_in_a_two_dataset_study(both, tmp_path):
    _, runs = both
    alone = _run(tmp_path, "alone", [SPRITES])
    key = ["activation", "kl_weight", "seed"]
    joined = alone.merge(runs[runs["dataset"] == "sprites"], on=key, suffixes=("", "_both"))
    assert len(joined) == len(alone) == 12
    for column in METRIC_COLUMNS:
        assert joined[column].tolist() == joined[f"{column}_both"].tolist(), column


def test_the_report_speaks_per_dataset_across_datasets_and_of_disentanglement(both):
    out, _ = both
    md = (out / "report.md").read_text()
    assert "Does the verdict transfer across datasets?" in md
    assert "## Disentanglement" in md and "Does β buy disentanglement?" in md
    assert "Per factor, accuracy · MIG" in md and "| orientation (chance 0.25) |" in md
    assert "dataset = digits" in md and "dataset = sprites" in md
    transfer = pd.read_csv(out / "transfer.csv")
    assert set(transfer["activation"]) == {"relu", "tanh", "elu"}
    assert {"avg_rank_digits", "avg_rank_sprites", "avg_rank_all", "rank_over_datasets",
            "friedman_min_p"} <= set(transfer.columns)
    assert (transfer["friedman_min_p"] > 0.05).all()  # two datasets cannot separate three activations
    for figure in ("transfer.png", "disentanglement_dataset-sprites.png", "traversals_dataset-sprites.png"):
        assert (out / "figures" / figure).is_file(), figure
    assert not (out / "figures" / "disentanglement_dataset-digits.png").exists()


def test_a_bad_entry_of_the_axis_is_named_and_nothing_is_written(tmp_path):
    path = write_study(tmp_path, "bad", space={"activation": ["relu"], "dataset": [DIGITS, {**SPRITES, "size": 48}]},
                       **CHANGES)
    with pytest.raises(UserError, match=r"bad\.yaml: space\.dataset entry 'sprites': dataset\.size must be 32 or 64"):
        run_study(load_study(path), tmp_path / "results", progress=False)
    assert not (tmp_path / "results").exists()


def test_a_killed_two_dataset_study_resumes_with_the_same_numbers(both, tmp_path):
    from tests.integration.helpers import ablate, killed_at

    _, whole = both
    path = write_study(tmp_path, "both", space={"activation": ["relu", "tanh", "elu"], "dataset": [DIGITS, SPRITES],
                                                "kl_weight": [0.5, 2.0]}, checkpoint_minutes=1.0e-6, **CHANGES)
    killed_at(2, 2, "run", str(path), "--no-progress", "--no-report", cwd=tmp_path)  # the second cohort, saved at epoch 1
    rerun = ablate("run", str(path), "--no-progress", cwd=tmp_path)
    assert rerun.returncode == 0 and "resuming" in rerun.stderr, rerun.stderr[-2000:]
    resumed = pd.read_csv(tmp_path / "results" / "both" / "runs.csv")
    key = ["dataset", "activation", "kl_weight", "seed"]
    joined = whole.merge(resumed, on=key, suffixes=("", "_resumed"))
    assert len(joined) == len(whole) == 24
    for column in METRIC_COLUMNS:
        assert joined[column].fillna(-1).tolist() == joined[f"{column}_resumed"].fillna(-1).tolist(), column
