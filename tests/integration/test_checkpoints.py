"""A SIGKILL mid-cohort after a checkpoint: the rerun resumes the cohort from that epoch (its
log says which) and every member's final numbers equal an uninterrupted run's (issue 16)."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import torch

from tests.integration.helpers import ablate, killed_at, load_store
from tests.studies import study_yaml

STUDY = study_yaml("ck", dataset={"train_size": 700, "test_size": 100}, model={"hidden": [64]},
                   train={"epochs": 30, "batch_size": 50}, seeds=2, checkpoint_minutes=0.0001,
                   space={"activation": ["relu", "tanh", "softplus"], "latent_dim": [2]})

NUMBERS = ["test_nelbo", "test_recon", "test_nll", "val_nelbo", "mutual_info", "active_units",
           "probe_accuracy", "epochs_run"]


def _epoch_saved(folder) -> int:
    for path in folder.glob("*.pt"):
        try:
            return torch.load(path, weights_only=True)["epoch"]
        except Exception:  # replaced while read
            return 0
    return 0


def test_sigkill_after_a_checkpoint_resumes_the_cohort_with_the_same_numbers(tmp_path):
    from ablate.run.runner import run_study
    from ablate.study.loader import load_study

    (tmp_path / "ck.yaml").write_text(STUDY)
    run_study(load_study(tmp_path / "ck.yaml"), tmp_path / "whole", progress=False)  # uninterrupted
    (tmp_path / "results" / "ck").mkdir(parents=True)  # the dataset's classifier, trained once
    shutil.copy(tmp_path / "whole" / "ck" / "classifier.pt", tmp_path / "results" / "ck")

    killed_at(1, 12, "run", "ck.yaml", "--no-progress", cwd=tmp_path)  # epoch 12 of 30
    folder = tmp_path / "results" / "ck" / "checkpoints"
    at_kill = _epoch_saved(folder)
    assert at_kill == 11, "the last checkpoint is the epoch before the kill"

    rerun = ablate("run", "ck.yaml", "--no-progress", "--no-report", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    said = re.search(r"ck: resuming 6 members \(trials [\d, ]+\) from their checkpoint at epoch "
                     r"(\d+) of 30", rerun.stderr)
    assert said and int(said.group(1)) >= at_kill, rerun.stderr
    assert not folder.exists(), "a checkpoint is deleted once its trials are told"

    key = ["activation", "seed"]
    a = _tables(tmp_path / "whole")[0].sort_values(key).reset_index(drop=True)
    b, epochs = _tables(tmp_path / "results")
    b = b.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) == 6 and (b["status"] == "ok").all()
    # the stated tolerance: float32 round-off (the same cohort resumes bit for bit on one machine)
    pd.testing.assert_frame_equal(a[key + NUMBERS], b[key + NUMBERS], rtol=1e-6, check_exact=False)
    assert len(epochs) == 6 * 30 and not epochs.duplicated(["trial", "seed", "epoch"]).any()


def _tables(root):
    """runs and epochs as `ablate report` would tabulate them, read from the store."""
    from ablate.analysis.tables import epochs_frame, runs_frame
    from ablate.study.loader import load_study

    study = load_study(root / "ck" / "study.yaml")
    store = load_store(f"sqlite:///{root / 'ck' / 'study.db'}", "ck")
    return runs_frame(store, study), epochs_frame(store, study)
