"""The real CLI on tiny studies: outputs, report rebuild, listing, bad input."""

from __future__ import annotations

import html
import re

import pandas as pd
import pytest

from tests.integration.helpers import ablate, tiny_study


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    study = tiny_study(tmp)
    proc = ablate("run", str(study), "--no-progress", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp, study, proc


def test_run_writes_every_output(finished):
    tmp, _, proc = finished
    out = tmp / "results" / "tiny"
    assert "report: results/tiny/report.html" in proc.stdout
    for name in ("study.db", "study.yaml", "runs.csv", "epochs.csv", "report.html", "report.md",
                 "figures/heatmap.png", "figures/ranking.png", "figures/curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3 * 2 * 2
    assert not runs.duplicated(["activation", "latent_dim", "kl_weight", "seed"]).any()
    for col in ("activation", "latent_dim", "kl_weight", "seed", "status", "test_nelbo",
                "test_recon", "test_kl", "test_nll", "active_units", "mutual_info", "dead_units",
                "probe_accuracy", "epochs_run", "train_seconds"):
        assert col in runs.columns, col
    ok = runs[runs["status"] == "ok"]
    assert len(ok) >= 8 and ok["test_nll"].notna().all()
    epochs = pd.read_csv(out / "epochs.csv")
    assert {"train_loss", "train_recon", "train_kl", "test_nelbo", "epoch"} <= set(epochs.columns)
    assert epochs["epoch"].max() == 2


def test_report_is_self_contained_and_escaped(finished):
    tmp, _, _ = finished
    text = (tmp / "results" / "tiny" / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(images) == 3 and all(src.startswith("data:image/png;base64,") and len(src) > 1000
                                    for src in images)
    for section in ("Summary", "Setup", "Ranking of activations", "Failures", "Reproduce"):
        assert f">{section}</h2>" in text
    assert "&lt;" not in text or "<script" not in text


def test_report_rebuilds_from_store_and_escapes_user_text(finished):
    tmp, study, _ = finished
    out = tmp / "results" / "tiny"
    text = study.read_text()
    (out / "study.yaml").write_text("description: \"<b>bold & </b>\"\n" + text)
    (out / "report.html").unlink()
    proc = ablate("report", str(out), cwd=tmp)
    (out / "study.yaml").write_text(text)
    assert proc.returncode == 0, proc.stderr
    page = (out / "report.html").read_text()
    assert "<b>bold" not in page and html.escape("<b>bold & </b>") in page


def test_rerun_of_finished_study_trains_nothing(finished):
    tmp, study, _ = finished
    before = pd.read_csv(tmp / "results" / "tiny" / "runs.csv")
    proc = ablate("run", str(study), "--no-progress", cwd=tmp)
    assert proc.returncode == 0
    after = pd.read_csv(tmp / "results" / "tiny" / "runs.csv")
    pd.testing.assert_frame_equal(before, after)


def test_list():
    acts = ablate("list", "activations", cwd=".")
    assert acts.returncode == 0
    for name in ("identity", "exponential", "prelu", "selu", "swish", "mish", "softplus"):
        assert re.search(rf"^{name}\s", acts.stdout, re.M)
    data = ablate("list", "datasets", cwd=".")
    assert all(n in data.stdout for n in ("digits", "mnist", "fashion_mnist", "kmnist", "npz", "synthetic"))


BAD_INPUTS = {
    "malformed": ("name: x\nspace: [unclosed\n", "malformed YAML"),
    "unknown key": ("name: x\nepoch: 3\n", "unknown key 'epoch'"),
    "wrong type": ("name: x\ntrain: {lr: fast}\n", "train.lr: must be a number"),
    "empty axis": ("name: x\nspace: {activation: []}\n", "space.activation: is an empty list"),
    "unknown activation": ("name: x\nspace: {activation: [relu, swishh]}\n",
                           "unknown activation 'swishh'. Did you mean 'swish'?"),
    "unknown dataset": ("name: x\ndataset: {name: cifar}\n", "unknown dataset 'cifar'"),
    "missing IDX folder": ("name: x\ndataset: {name: mnist, root: nowhere, download: false}\n",
                           "dataset.root: nowhere does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    text, expected = BAD_INPUTS[case]
    (tmp_path / "s.yaml").write_text(text)
    proc = ablate("run", "s.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert expected in proc.stderr and "s.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_missing_study_file(tmp_path):
    proc = ablate("run", "absent.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "absent.yaml: no such study file" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_idx_file(tmp_path):
    (tmp_path / "mn").mkdir()
    (tmp_path / "s.yaml").write_text("name: x\ndataset: {name: mnist, root: mn, download: false}\n")
    proc = ablate("run", "s.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "lacks train-images-idx3-ubyte.gz" in proc.stderr
    assert "s.yaml" in proc.stderr and not (tmp_path / "results").exists()


def test_changed_study_is_refused_and_keeps_results(finished, tmp_path):
    tmp, study, _ = finished
    changed = tmp / "changed" / "tiny.yaml"
    changed.parent.mkdir(exist_ok=True)
    changed.write_text(study.read_text().replace("epochs: 2", "epochs: 3"))
    db = tmp / "results" / "tiny" / "study.db"
    stamp = db.stat().st_mtime_ns
    proc = ablate("run", str(changed), "--results", str(tmp / "results"), cwd=tmp)
    assert proc.returncode == 2 and "other settings" in proc.stderr
    assert db.stat().st_mtime_ns == stamp
