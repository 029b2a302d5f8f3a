"""Several `ablate run` processes on one study and its default SQLite store cooperate:
every grid point is trained exactly once, and none fails with "database is locked"."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd

from tests.integration.helpers import start, tiny_study


def test_two_local_workers_share_one_grid_exactly_once(tmp_path):
    study = tiny_study(tmp_path, name="shared", epochs=3, seeds=2, cohort=2)  # a trial per cohort
    procs = [start("run", str(study), "--no-progress", cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "database is locked" not in err

    db = tmp_path / "results" / "shared" / "study.db"
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT t.trial_id, a.value_json FROM trials t JOIN trial_user_attributes a "
            "ON a.trial_id = t.trial_id WHERE t.state = 'COMPLETE' AND a.key = 'worker'").fetchall()
        params = con.execute("SELECT trial_id, param_name, param_value FROM trial_params").fetchall()
    complete = {tid for tid, _ in rows}
    points = {}
    for tid, name, value in params:
        if tid in complete:
            points.setdefault(tid, {})[name] = value
    keys = [json.dumps(p, sort_keys=True) for p in points.values()]
    assert len(keys) == 6 and len(set(keys)) == 6  # 3 activations × 2 latent sizes, once each
    assert len({json.loads(w) for _, w in rows}) == 2, "both workers should have trained trials"
    runs = pd.read_csv(tmp_path / "results" / "shared" / "runs.csv")
    assert len(runs) == 6 * 2
    assert not runs.duplicated(["activation", "latent_dim", "kl_weight", "seed"]).any()
