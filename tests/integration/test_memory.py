"""A cohort that does not fit in memory is split and trained in parts: no out-of-memory crash.

The cohort-size estimate reads free memory from the OS; a process limit (RLIMIT_DATA) that
the estimate does not see makes the first real allocation fail, as a too-big GPU cohort would.
"""

from __future__ import annotations

import resource
import subprocess
import sys

import pandas as pd

from tests.integration.helpers import ablate
from tests.studies import study_yaml

BIG = study_yaml("big", dataset={"train_size": 128, "test_size": 32},
                 model={"hidden": [4096, 4096]},  # 34 M weights a member: 0.55 GB with its grads and Adam state
                 train={"epochs": 1}, space={"activation": ["relu", "tanh"], "latent_dim": [2], "kl_weight": [1.0, 2.0]})


PROBE = ("import ablate.cli, ablate.run.runner, ablate.analysis.report, torch, optuna, sklearn.linear_model\n"
         "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmData')))")


def test_cohort_too_big_for_memory_is_split_not_crashed(tmp_path):
    (tmp_path / "big.yaml").write_text(BIG)
    base = int(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                              check=True).stdout) * 1024
    limit = base + (1800 << 20)  # room for two members, not for all four

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    run = ablate("run", "big.yaml", "--no-progress", cwd=tmp_path, preexec_fn=cap_memory)
    assert run.returncode == 0, run.stderr
    assert "did not fit in memory" in run.stderr and "cohorts of 2 and 2" in run.stderr
    runs = pd.read_csv(tmp_path / "results" / "big" / "runs.csv")
    assert len(runs) == 4 and (runs["status"] == "ok").all()
    assert not runs.duplicated(["activation", "kl_weight", "seed"]).any()
