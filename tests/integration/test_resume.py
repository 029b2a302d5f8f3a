"""Killing `ablate run` midway (SIGKILL) and running it again completes the study exactly once."""

from __future__ import annotations

import sqlite3

import pandas as pd

from tests.integration.helpers import ablate, killed_at, tiny_study


def _complete(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sigkill_midway_then_rerun_completes_every_member_once(tmp_path):
    # One trial (3 seeds) per cohort, so the study advances in six steps we can interrupt.
    study = tiny_study(tmp_path, epochs=6, seeds=3, cohort=3)
    db = tmp_path / "results" / "tiny" / "study.db"
    killed_at(3, 3, "run", str(study), "--no-progress", cwd=tmp_path)  # mid-way through the third
    assert _complete(db) == 2, "two cohorts were told before the kill"

    rerun = ablate("run", str(study), "--no-progress", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    runs = pd.read_csv(tmp_path / "results" / "tiny" / "runs.csv")
    assert len(runs) == 6 * 3
    assert not runs.duplicated(["activation", "latent_dim", "kl_weight", "seed"]).any()
    assert _complete(db) + int((runs.groupby("trial")["status"].apply(
        lambda s: (s == "failed").all())).sum()) == 6
