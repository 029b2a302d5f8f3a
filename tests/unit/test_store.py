"""Telling a live worker's trial from a dead one's, and the store's lock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

from ablate.run.store import STALE_S, Backend, stale
from ablate.study.loader import parse_study

HOST = socket.gethostname()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_by_local_pid_or_old_heartbeat():
    now = time.time()
    assert not stale({"worker": f"{HOST}:{os.getpid()}", "heartbeat": now}, now - 5, now)
    assert stale({"worker": f"{HOST}:{_dead_pid()}", "heartbeat": now}, now - 5, now)
    # another machine's worker: judged by its heartbeat only
    assert not stale({"worker": "elsewhere:1", "heartbeat": now - 10}, now - 999, now)
    assert stale({"worker": "elsewhere:1", "heartbeat": now - STALE_S - 1}, now - 999, now)
    assert stale({"worker": "elsewhere:1"}, now - STALE_S - 1, now)  # never beat: its start counts
    assert stale({}, now, now)  # claimed but never recorded: its process died in between
    # a live local pid whose heartbeat stopped long ago (a reused pid) is stale too
    assert stale({"worker": f"{HOST}:{os.getpid()}", "heartbeat": now - STALE_S - 1}, now, now)


def test_sqlite_lock_excludes_other_holders(tmp_path):
    study = parse_study("name: locked\n", "s.yaml")
    a, b = Backend(study, tmp_path), Backend(study, tmp_path)
    order = []

    def second():
        with b.lock():
            order.append("b")

    with a.lock():
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("a")
    t.join(10)
    assert order == ["a", "b"]


def test_optuna_internals_behind_store_functions(tmp_path):
    """The few places ablate reaches past Optuna's public API, checked against real Optuna on a
    real SQLite store: if Optuna changes any of them, this fails."""
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState

    from ablate.run.store import counted, fail_interrupted, is_running, queued_params, trial_id, was_queued

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = optuna.create_study(study_name="x", storage=f"sqlite:///{tmp_path / 'x.db'}")
    store.enqueue_trial({"n": 3})
    assert queued_params(store.get_trials(deepcopy=False)[0]) == {"n": 3}  # queued, not yet asked
    dists = {"n": IntDistribution(1, 5)}
    queued, sampled = store.ask(dists), store.ask(dists)
    assert was_queued(store, queued) and not was_queued(store, sampled)
    assert queued.params == {"n": 3}
    assert trial_id(queued) != trial_id(sampled)
    assert trial_id(store.get_trials(deepcopy=False)[0]) == trial_id(queued)
    assert is_running(store, queued)
    frozen = next(t for t in store.get_trials(deepcopy=False) if t.number == sampled.number)
    fail_interrupted(store, frozen)  # as another worker would, on a trial it does not hold
    after = next(t for t in store.get_trials(deepcopy=False) if t.number == sampled.number)
    assert after.state == TrialState.FAIL and after.user_attrs["interrupted"] is True
    assert not is_running(store, sampled) and not counted(after)
    assert counted(next(t for t in store.get_trials(deepcopy=False) if t.number == queued.number))


def test_a_dead_workers_trial_that_recorded_its_members_is_not_counted_twice():
    """Killed after recording its members and before telling, a trial is failed as interrupted
    and its configuration runs again: the tables hold the re-run's members only."""
    import optuna

    from ablate.analysis.tables import runs_frame, trials_frame
    from ablate.study.loader import parse_study

    study = parse_study("space: {activation: [relu]}\nseeds: 1\n", "s.yaml")
    store = optuna.create_study(study_name="s", storage=optuna.storages.InMemoryStorage())
    member = {"seed": 0, "status": "ok", "reason": None, "fail_epoch": None, "epochs_run": 1,
              "train_seconds": 1.0, "test_nll": 25.0}
    for interrupted in (True, False):
        trial = store.ask({"activation": optuna.distributions.CategoricalDistribution(["relu"])})
        trial.set_user_attr("members", [member])
        trial.set_user_attr("epochs", {"0": []})
        if interrupted:
            trial.set_user_attr("interrupted", True)
            store.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            store.tell(trial, 25.0)
    assert list(runs_frame(store, study)["trial"]) == [1]
    assert list(trials_frame(store, study)["trial"]) == [1]
