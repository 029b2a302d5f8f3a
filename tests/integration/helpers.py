"""Running the real CLI in a subprocess on tiny studies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY = """\
name: {name}
dataset: {{name: digits, train_size: 240, test_size: 60}}
model: {{hidden: [32]}}
train: {{epochs: {epochs}, batch_size: 64}}
eval: {{iwae_samples: 8}}
seeds: {seeds}
cohort_size: {cohort}
space:
  activation: [relu, tanh, exponential]
  latent_dim: [2, 4]
  kl_weight: [1.0]
"""


def tiny_study(tmp_path: Path, name: str = "tiny", epochs: int = 2, seeds: int = 2,
               cohort: str | int = "auto") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(name=name, epochs=epochs, seeds=seeds, cohort=cohort))
    return path


def _command(args) -> dict:
    """`python -m ablate ARGS` in `cwd`: the one way tests start the real CLI."""
    return {"args": [sys.executable, "-m", "ablate", *args],
            "env": {**os.environ, "PYTHONUNBUFFERED": "1"}, "text": True}


def ablate(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    """Run the CLI to its end; stdout and stderr captured."""
    return subprocess.run(**_command(args), cwd=cwd, capture_output=True, timeout=600, **kw)


def start(*args: str, cwd: Path, quiet: bool = False) -> subprocess.Popen:
    """Start the CLI in the background (a worker, or a run to kill); its output piped, or
    discarded when `quiet`."""
    sink = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(**_command(args), cwd=cwd, stdout=sink, stderr=sink)


SEARCH = """\
name: {name}
dataset: {{name: digits, train_size: 240, test_size: 60}}
model: {{hidden: [32]}}
train: {{epochs: {epochs}, batch_size: 64}}
eval: {{iwae_samples: 8}}
seeds: 2
search: {{strategy: {strategy}, n_trials: {n_trials}, pruner: {pruner}, cohort_trials: {cohort}, sampler_seed: 0}}
space:
  activation: [relu, tanh, softplus]
  latent_dim: {{low: 2, high: 6}}
  train.lr: {{low: 1.0e-5, high: 3.0e-2, log: true}}
"""


def search_study(tmp_path: Path, name: str = "search", strategy: str = "random", n_trials: int = 8,
                 pruner: str = "none", cohort: int = 2, epochs: int = 4) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SEARCH.format(name=name, strategy=strategy, n_trials=n_trials, pruner=pruner,
                                  cohort=cohort, epochs=epochs))
    return path


def load_store(url: str, name: str):
    """The study's Optuna record, as a test reads it (no ablate code in between)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)


def trial_states(db: Path, name: str) -> list:
    """The states of the trials of every Optuna study in `db` whose name matches the SQL
    pattern `name`, read from the SQLite file opened read-only. A poller that opened it
    through Optuna would create the schema itself, racing the run that is creating it (the
    run takes its lock for that; a reader must not write at all)."""
    import sqlite3

    from optuna.trial import TrialState

    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            rows = conn.execute("SELECT t.state FROM trials t JOIN studies s USING (study_id) "
                                "WHERE s.study_name LIKE ?", (name,)).fetchall()
    except sqlite3.Error:  # tables not created yet, or busy
        return []
    return [TrialState[state] for (state,) in rows]


def counted(store) -> list:
    """Trials that count toward n_trials: not a dead worker's (re-run) and not an empty claim."""
    from ablate.run.store import counted as counts

    return [t for t in store.get_trials(deepcopy=False) if counts(t)]
