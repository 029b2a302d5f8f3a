"""Two workers on one grid study through a real PostgreSQL server (Debian's package, started on
loopback for the test): every grid point is completed exactly once, and the URL's password is
never printed. This test is never skipped: without a server it fails, saying why."""

from __future__ import annotations

import json
import socket

import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.integration import postgres
from tests.integration.helpers import ablate, counted, load_store, start, tiny_study


@pytest.fixture(scope="module")
def pg_url():
    with postgres.server() as url:
        yield url


def test_two_workers_on_postgresql_complete_every_grid_point_once(tmp_path, pg_url):
    study = tiny_study(tmp_path, name="pg_grid", epochs=3, seeds=2, cohort=2)  # a trial per cohort
    procs = [start("run", str(study), "--no-progress", "--storage", pg_url,
                   "--results", str(tmp_path / f"results{i}"), cwd=tmp_path)
             for i in range(2)]  # as on two machines: each its own results folder
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "not-a-real-secret" not in out + err

    store = load_store(pg_url.replace("postgresql://", "postgresql+psycopg://"), "pg_grid")
    trials = [t for t in counted(store) if t.state == TrialState.COMPLETE]
    points = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(points) == 6 and len(set(points)) == 6  # 3 activations × 2 latent sizes, once each
    assert not [t for t in store.get_trials(deepcopy=False)
                if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # which worker trains which trial is the scheduler's choice (test_workers.py says why)
    assert {t.user_attrs["worker"] for t in trials} <= {f"{socket.gethostname()}:{p.pid}" for p in procs}

    # Either worker's folder rebuilds the whole study's report from the shared store.
    report = ablate("report", str(tmp_path / "results0" / "pg_grid"), "--storage", pg_url, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    runs = pd.read_csv(tmp_path / "results0" / "pg_grid" / "runs.csv")
    assert len(runs) == 6 * 2 and not runs.duplicated(["activation", "latent_dim", "seed"]).any()


def test_wrong_password_or_database_is_one_line(tmp_path, pg_url):
    study = tiny_study(tmp_path, name="pg_bad")
    url = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    proc = ablate("run", str(study), "--storage", url, cwd=tmp_path)
    assert proc.returncode == 2 and "cannot open it" in proc.stderr and "no_such_database" in proc.stderr
    assert "not-a-real-secret" not in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
