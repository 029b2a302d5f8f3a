"""Several `ablate run` processes on one study and its default SQLite store cooperate:
every grid point is trained exactly once, and none fails with "database is locked"."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time

import pandas as pd

from tests.integration.helpers import ablate, start, tiny_study
from tests.studies import write_study


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
    # Which worker trains which trial is up to the scheduler (a fast worker may take them
    # all before the other has started), so it is recorded but not asserted: what must hold
    # under any interleaving is every point once, from one of the two workers.
    assert {json.loads(w) for _, w in rows} <= {f"{socket.gethostname()}:{p.pid}" for p in procs}
    runs = pd.read_csv(tmp_path / "results" / "shared" / "runs.csv")
    assert len(runs) == 6 * 2
    assert not runs.duplicated(["activation", "latent_dim", "kl_weight", "seed"]).any()


def test_status_of_a_running_two_worker_study_shows_both_workers(tmp_path):
    write_study(tmp_path, "busy", dataset={"train_size": 1000, "test_size": 60}, model={"hidden": [64]},
                train={"epochs": 60, "batch_size": 50}, seeds=2, cohort_size=2,
                space={"activation": ["relu", "tanh", "softplus", "elu"], "latent_dim": [2, 4]})
    procs = [start("run", "busy.yaml", "--no-progress", cwd=tmp_path, quiet=True) for _ in range(2)]
    pids = [f":{p.pid}:" for p in procs]
    try:
        deadline, shown = time.time() + 120, ""
        while time.time() < deadline and not all(pid in shown for pid in pids):
            status = ablate("status", "busy.yaml", cwd=tmp_path)
            shown = status.stdout if status.returncode == 0 else ""
        assert all(pid in shown for pid in pids), shown
    finally:
        for p in procs:
            p.kill()
            p.wait()
    first, *workers, eta = shown.strip().splitlines()
    assert first.startswith("study busy: ") and "of 8 trials finished" in first
    assert "of 16 members done" in first
    assert len(workers) == 2 and all(re.search(r"trials \d+; last heartbeat \d+ s ago$", w) for w in workers)
    assert eta.startswith("ETA: ")


def test_workers_2_on_one_machine_trains_every_member_once_with_one_workers_numbers(tmp_path):
    """`ablate run --workers 2`: two local workers on one store, one progress bar, one report;
    every member once, each with the numbers one worker gives it (its cohort changes nothing
    but float rounding)."""
    single = tiny_study(tmp_path, name="single", epochs=2, seeds=2, cohort=2)
    double = tiny_study(tmp_path, name="double", epochs=2, seeds=2, cohort=2)
    assert ablate("run", str(single), "--no-progress", cwd=tmp_path).returncode == 0
    proc = ablate("run", str(double), "--workers", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on 2 workers" in proc.stderr and "summed over the workers" in proc.stderr
    assert (tmp_path / "results" / "double" / "report.html").is_file()
    key = ["activation", "latent_dim", "kl_weight", "seed"]
    one = pd.read_csv(tmp_path / "results" / "single" / "runs.csv")
    two = pd.read_csv(tmp_path / "results" / "double" / "runs.csv")
    assert len(two) == len(one) == 12 and not two.duplicated(key).any()
    joined = one.merge(two, on=key, suffixes=("", "_2"))
    assert (joined["status"] == joined["status_2"]).all()
    ok = joined[joined["status"] == "ok"]
    for column in ("test_nelbo", "test_nll", "active_units"):
        assert ((ok[column] - ok[f"{column}_2"]).abs() <= 1e-4 * ok[column].abs() + 1e-6).all(), column


def test_a_bad_workers_or_devices_value_is_one_line(tmp_path):
    study = tiny_study(tmp_path, name="w")
    for args, message in ((("--workers", "0"), "--workers 0: give 1 or more"),
                          (("--devices", "gpu0"), "--devices: 'gpu0' must be auto, cpu, cuda or cuda:N")):
        proc = ablate("run", str(study), *args, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "results").exists()
