"""Bad data and total failure through the real CLI (issue 16): a NaN pixel or a value outside
[0, 1] for a Bernoulli likelihood is one line and exit 2 with nothing written; a study whose
every member diverges still writes its tables and a report that says why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from tests.integration.helpers import ablate
from tests.studies import write_study



def _npz(tmp_path, poison) -> str:
    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target
    x_train, x_test = x[:300].copy(), x[300:360].copy()
    poison(x_train, x_test)
    np.savez(tmp_path / "bad.npz", x_train=x_train, y_train=y[:300], x_test=x_test, y_test=y[300:360])
    return str(tmp_path / "bad.npz")


def _nan_in_test(x_train, x_test):
    x_test[7, 3] = np.nan


def _above_one(x_train, x_test):
    x_train[4] *= 3.0


@pytest.mark.parametrize("poison,likelihood,says", [
    (_nan_in_test, "gaussian", "the test split holds non-finite values (NaN or inf) in 1 of its "
                               "60 rows, the first at row 7"),
    (_above_one, "bernoulli", "the training split spans [0, 3], but a Bernoulli likelihood"),
])
def test_bad_values_are_one_line_exit_2_and_nothing_written(tmp_path, poison, likelihood, says):
    write_study(tmp_path, "bad", dataset={"name": "npz", "path": _npz(tmp_path, poison), "shape": [1, 8, 8],
                                          "train_size": None, "test_size": None},
                model={"likelihood": likelihood}, train={"epochs": 1}, eval=None, space={"activation": ["relu"]})
    proc = ablate("run", "bad.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("ablate: error: bad.yaml: dataset.path ") and str(tmp_path / "bad.npz") in lines[0]
    assert says in lines[0]
    assert not (tmp_path / "results").exists()


def test_a_study_whose_every_member_diverges_still_reports_why(tmp_path):
    write_study(tmp_path, "boom", train={"epochs": 3, "batch_size": 50, "lr": 10.0}, seeds=2,
                space={"activation": ["exponential"], "latent_dim": [2]})
    proc = ablate("run", "boom.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = tmp_path / "results" / "boom"
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 and (runs["status"] == "failed").all()
    assert runs["reason"].str.contains("became NaN at epoch").all()
    summary = (out / "report.md").read_text().split("## Summary")[1].split("\n## ")[0]
    assert "No member trained to the end: all 2 failed or were pruned" in summary
    assert "- 2 members (exponential): training loss became NaN at epoch N (step N)" in summary
    assert (out / "report.html").stat().st_size > 1000


def test_set_overrides_are_checked_like_the_yaml_and_shown_in_the_report(tmp_path):
    write_study(tmp_path, "o", train={"epochs": 4, "batch_size": 50}, space={"activation": ["relu"], "latent_dim": [2]})
    bad = ablate("run", "o.yaml", "--set", "train.epoch=1", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == ("ablate: error: o.yaml: --set train.epoch=1: train.epoch: unknown "
                                  "key 'epoch'. Did you mean 'epochs'? Allowed here: kl_weight, "
                                  "epochs, batch_size, lr, dtype, kl_warmup_epochs.")
    bad = ablate("run", "o.yaml", "--set", "space.activation=[relu, gelux]", cwd=tmp_path)
    assert bad.returncode == 2 and "--set space.activation=[relu, gelux]: space.activation: unknown activation 'gelux'" in bad.stderr
    assert not (tmp_path / "results").exists()

    ok = ablate("run", "o.yaml", "--no-progress", "--set", "train.epochs=1", "--set",
                "space.activation=[relu, tanh]", "--set", "train.lr=3e-3", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    out = tmp_path / "results" / "o"
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["activation"]) == ["relu", "tanh"]
    assert (runs["epochs"] == 1).all() and (runs["lr"] == 3e-3).all()
    report = (out / "report.md").read_text()
    assert "`--set train.epochs=1`, `--set space.activation=[relu, tanh]`, `--set train.lr=3e-3`" in report
    # the results folder keeps the study as overridden: `ablate report` rebuilds the same study
    from ablate.study.loader import load_study

    kept = load_study(out / "study.yaml")
    assert kept.base.epochs == 1 and kept.base.lr == 3e-3 and kept.space["activation"] == ("relu", "tanh")
    assert kept.fingerprint() == load_study(tmp_path / "o.yaml", ("train.epochs=1",
                                            "space.activation=[relu, tanh]", "train.lr=3e-3")).fingerprint()
