"""Running the real CLI in a subprocess on tiny studies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.studies import write_study


def tiny_study(tmp_path: Path, name: str = "tiny", epochs: int = 2, seeds: int = 2,
               cohort: str | int = "auto") -> Path:
    """Three activations (one that diverges easily) × two latent sizes on 240 training digits."""
    return write_study(tmp_path, name, dataset={"train_size": 240, "test_size": 60}, model={"hidden": [32]},
                       train={"epochs": epochs}, eval={"iwae_samples": 8}, seeds=seeds, cohort_size=cohort,
                       space={"activation": ["relu", "tanh", "exponential"], "latent_dim": [2, 4],
                              "kl_weight": [1.0]})


def _command(args, **env: str) -> dict:
    """`python -m ablate ARGS` in `cwd`: the one way tests start the real CLI."""
    return {"args": [sys.executable, "-m", "ablate", *args],
            "env": {**os.environ, "PYTHONUNBUFFERED": "1", **env}, "text": True}


def ablate(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    """Run the CLI to its end; stdout and stderr captured."""
    return subprocess.run(**_command(args), cwd=cwd, capture_output=True, timeout=600, **kw)


def killed_at(cohort: int, epoch: int, *args: str, cwd: Path) -> None:
    """Run the CLI until it kills itself with SIGKILL once its cohort-th cohort has reported
    `epoch` (the runner's fault hook, runner.FAULT): a crash at a chosen point, no race."""
    from ablate.run.runner import FAULT

    done = subprocess.run(**_command(args, **{FAULT: f"{cohort}:{epoch}"}), cwd=cwd, capture_output=True,
                          timeout=600)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-2000:])


def start(*args: str, cwd: Path, quiet: bool = False) -> subprocess.Popen:
    """Start the CLI in the background (a worker, or a run to kill); its output piped, or
    discarded when `quiet`."""
    sink = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(**_command(args), cwd=cwd, stdout=sink, stderr=sink)


def search_study(tmp_path: Path, name: str = "search", strategy: str = "random", n_trials: int = 8,
                 pruner: str = "none", cohort: int = 2, epochs: int = 4) -> Path:
    """A search over three activations, a latent size and the learning rate, two seeds a trial."""
    return write_study(tmp_path, name, dataset={"train_size": 240, "test_size": 60}, model={"hidden": [32]},
                       train={"epochs": epochs}, eval={"iwae_samples": 8}, seeds=2,
                       search={"strategy": strategy, "n_trials": n_trials, "pruner": pruner,
                               "cohort_trials": cohort, "sampler_seed": 0},
                       space={"activation": ["relu", "tanh", "softplus"], "latent_dim": {"low": 2, "high": 6},
                              "train.lr": {"low": 1.0e-5, "high": 3.0e-2, "log": True}})


def load_store(url: str, name: str):
    """The study's Optuna record, as a test reads it (no ablate code in between)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)

def counted(store) -> list:
    """Trials that count toward n_trials: not a dead worker's (re-run) and not an empty claim."""
    from ablate.run.store import counted as counts

    return [t for t in store.get_trials(deepcopy=False) if counts(t)]
