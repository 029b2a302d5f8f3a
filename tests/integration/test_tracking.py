"""Tracking against the real packages (issue 16): a study's trials logged to a local MLflow
store and to TensorBoard event files, read back with MLflow's client and TensorBoard's event
reader; a missing package is one clear error before anything is written."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from tests.integration.helpers import ablate
from tests.studies import study_yaml

STUDY = study_yaml("tr", train={"epochs": 3, "batch_size": 50}, seeds=2,
                   space={"activation": ["relu", "tanh"], "latent_dim": [2]},
                   tracking={"mlflow": {"experiment": "ablate-tr"}, "tensorboard": {}})

@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    (root / "tr.yaml").write_text(STUDY)
    proc = ablate("run", "tr.yaml", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "warning: tracking" not in proc.stderr
    out = root / "results" / "tr"
    return out, pd.read_csv(out / "runs.csv"), pd.read_csv(out / "epochs.csv")


def _curve(epochs: pd.DataFrame, trial: int, column: str) -> list[float]:
    return epochs[epochs["trial"] == trial].groupby("epoch")[column].mean().tolist()


def test_mlflow_runs_hold_params_curves_metrics_and_the_report(tracked):
    from mlflow.tracking import MlflowClient

    out, runs, epochs = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ablate-tr")
    logged = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(logged) == {"tr/t0", "tr/t1", "tr/report"}
    for trial in (0, 1):
        run = logged[f"tr/t{trial}"]
        mine = runs[runs["trial"] == trial]
        assert run.data.params["activation"] == mine["activation"].iloc[0]
        assert run.data.params["seeds"] == "0,1" and run.data.tags["ablate.state"] == "complete"
        history = client.get_metric_history(run.info.run_id, "val_nelbo")
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx(_curve(epochs, trial, "val_nelbo"), rel=1e-6)
        seed1 = client.get_metric_history(run.info.run_id, "seed1/train_loss")
        assert [m.value for m in seed1] == pytest.approx(
            epochs[(epochs["trial"] == trial) & (epochs["seed"] == 1)]["train_loss"].tolist(), rel=1e-6)
        assert run.data.metrics["final/test_nll"] == pytest.approx(mine["test_nll"].mean(), rel=1e-6)
        assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(logged["tr/report"].info.run_id)}
    assert {"report.html", "report.md", "runs.csv", "figures"} <= artifacts


def test_tensorboard_event_files_hold_curves_and_hparams(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, runs, epochs = tracked
    for trial in (0, 1):
        events = EventAccumulator(str(out / "tensorboard" / "tr" / f"t{trial}"))
        events.Reload()
        curve = events.Scalars("val_nelbo")
        assert [e.step for e in curve] == [1, 2, 3]
        assert [e.value for e in curve] == pytest.approx(_curve(epochs, trial, "val_nelbo"), rel=1e-5)
        assert "seed0/train_loss" in events.Tags()["scalars"]
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
        final = events.Scalars("final/test_nll")
        mine = runs[runs["trial"] == trial]
        assert final[0].value == pytest.approx(mine["test_nll"].mean(), rel=1e-5)


def test_a_missing_tracking_package_is_one_error_before_anything_is_written(tmp_path, monkeypatch):
    from ablate.cli import main

    (tmp_path / "tr.yaml").write_text(STUDY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    assert main(["run", "tr.yaml", "--no-progress"]) == 2
    assert not (tmp_path / "results").exists()


def test_tracking_keys_are_checked(tmp_path):
    (tmp_path / "bad.yaml").write_text(STUDY.replace("tensorboard: {}", "tensorbord: {}"))
    proc = ablate("run", "bad.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "tracking.tensorbord: unknown key 'tensorbord'. Did you mean 'tensorboard'?" in proc.stderr
