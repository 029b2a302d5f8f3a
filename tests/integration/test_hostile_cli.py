"""A hostile user at the real CLI (in process, through `ablate.cli.main`): each bad path, URL,
file or number is one line on stderr naming it (exit 2, no traceback) and writes nothing; read-
only commands create nothing; foreign files and an unreachable tracker never stop a study."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from ablate.cli import main
from tests.integration.helpers import load_store
from tests.studies import study_yaml, write_study

def _study(folder, name: str = "t", **changes):
    return write_study(folder, name, dataset={"test_size": 60}, **changes)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny study, trained (no report): its YAML and results folder."""
    root = tmp_path_factory.mktemp("hostile")
    study = _study(root)
    assert main(["run", str(study), "--no-progress", "--no-report", "--results", str(root / "results")]) == 0
    return study, root / "results" / "t"


def _copy(results, tmp_path, name: str = "t"):
    """A copy of a results folder to harm, without the planning lock the run left."""
    copy = shutil.copytree(results, tmp_path / name)
    (copy / ".plan.lock").unlink()
    return copy


def _listing(root) -> list:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*"))


def _refused(code: int, capsys, *named: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in named:
        assert text in err, err
    return err


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
    # search inputs (issue 6)
    "range under grid": ("name: x\nspace: {latent_dim: {low: 2, high: 8}}\n",
                         "space.latent_dim: is a range, which a grid cannot enumerate"),
    "unknown strategy": ("name: x\nsearch: {strategy: bayes, n_trials: 4}\n",
                         "search.strategy: must be one of grid, tpe, random, cmaes, qmc"),
    "unknown pruner": ("name: x\nsearch: {strategy: tpe, n_trials: 4, pruner: medain}\n",
                       "search.pruner: must be one of none, median, hyperband, wilcoxon, got 'medain'. "
                       "Did you mean 'median'?"),
    "objective not a metric": ("name: x\nsearch: {strategy: tpe, n_trials: 4, objective: accuracy}\n",
                               "search.objective: must be one of"),
    # selection on validation only (issue 12)
    "objective on test": ("name: x\nsearch: {strategy: tpe, n_trials: 4, objective: test_nll}\n",
                          "search.objective: test_nll is measured on the test split, which is only "
                          "reported: choosing by it would make the test numbers optimistic. Use its "
                          "validation twin, val_nll."),
    "search without validation": ("name: x\ndataset: {name: digits, val_fraction: 0}\n"
                                  "search: {strategy: random, n_trials: 4}\n",
                                  "dataset.val_fraction: is 0, but search.strategy random chooses by "
                                  "the validation split"),
    "protocol with a search": ("name: x\nsearch: {strategy: tpe, n_trials: 4}\n"
                               "protocol: {tune: {train.lr: {low: 0.001, high: 0.01}}}\n",
                               "protocol: runs its own search for each activation and cell"),
    "tuned key also compared": ("name: x\nspace: {lr: [0.001, 0.01]}\n"
                                "protocol: {tune: {train.lr: {low: 0.001, high: 0.01}}}\n",
                                "protocol.tune.train.lr: 'lr' is compared in space"),
    "n_trials missing": ("name: x\nsearch: {strategy: random}\n",
                         "search: strategy random needs n_trials"),
    "n_trials under grid": ("name: x\nsearch: {n_trials: 5}\n",
                            "search.n_trials: is not used by strategy grid"),
    "storage not a URL": ("name: x\nstorage: db.example.org\n",
                          "storage: 'db.example.org' is not a database URL"),
    "storage unsupported": ("name: x\nstorage: mysql://me:hunter2@db/x\n",
                            "storage: 'mysql' databases are not supported"),
    # conv models (issue 13)
    "conv deeper than the image": ("name: x\nmodel: {arch: conv, channels: [8, 8, 8, 8]}\n",
                                   "model.channels: a 8×8 image halves to 1×1 after 3 convolutions"),
    "mlp without hidden layers": ("name: x\nmodel: {hidden: []}\n",
                                  "model.hidden: is [], which leaves an mlp without a hidden layer"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    text, expected = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(text)
    err = _refused(main(["run", "s.yaml", "--no-progress"]), capsys, expected, "s.yaml")
    assert err.startswith("ablate: error: s.yaml")
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ 1. read-only commands
def test_status_with_a_mistyped_storage_creates_nothing(finished, tmp_path, capsys):
    _, results = finished
    before = _listing(tmp_path)
    code = main(["status", str(results), "--storage", f"sqlite:///{tmp_path}/typo/study.db"])
    _refused(code, capsys, "typo/study.db", "no such file", "--storage")
    assert _listing(tmp_path) == before


def test_report_leaves_a_foreign_sqlite_file_alone(finished, tmp_path, capsys):
    _, results = finished
    foreign = tmp_path / "notes.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text)")
    content, before = foreign.read_bytes(), _listing(tmp_path)
    code = main(["report", str(results), "--storage", f"sqlite:///{foreign}"])
    _refused(code, capsys, "notes.db", "Optuna's tables", "--storage")
    assert foreign.read_bytes() == content and _listing(tmp_path) == before


def test_status_reads_a_results_folder_and_writes_nothing(finished, tmp_path, capsys):
    _, results = finished
    copy = _copy(results, tmp_path)
    before = _listing(tmp_path)
    assert main(["status", str(copy)]) == 0
    assert "2 of 2 trials finished" in capsys.readouterr().out
    assert _listing(tmp_path) == before  # no .plan.lock, the store untouched


def test_report_of_a_changed_study_is_refused(finished, tmp_path, capsys):
    study, results = finished
    changed = tmp_path / "t.yaml"
    changed.write_text(study.read_text().replace("epochs: 2", "epochs: 3"))
    before = _listing(results)
    code = main(["report", str(changed), "--results", str(results.parent)])
    _refused(code, capsys, str(changed), "other settings", "epochs: 2 in the store, 3 here")
    assert _listing(results) == before


# ------------------------------------------------------------------ 2. paths and URLs
@pytest.mark.parametrize("case", ["a file", "under a file", "a name too long", "a study name too long"])
def test_a_results_path_that_cannot_be_made_is_one_line(tmp_path, capsys, case):
    (tmp_path / "afile").write_text("not a folder")
    study = tmp_path / "s.yaml"
    study.write_text(study_yaml("n" * 260 if case == "a study name too long" else "t", dataset={"test_size": 60}))
    results = {"a file": "afile", "under a file": "afile/x", "a name too long": "r" * 300,
               "a study name too long": "results"}[case]
    named = {"a file": "afile", "under a file": "afile", "a name too long": "300 bytes long",
             "a study name too long": "260 bytes long"}[case]
    before = _listing(tmp_path)
    code = main(["run", str(study), "--no-progress", "--results", str(tmp_path / results)])
    _refused(code, capsys, named)
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_port_that_is_not_a_number_is_one_line(finished, tmp_path, capsys, command):
    study, _ = finished
    before = _listing(tmp_path)
    code = main([command, str(study), "--results", str(tmp_path), "--storage",
                 "postgresql://u:hunter2@localhost:abc/db"])
    err = _refused(code, capsys, "storage", "localhost:abc")
    assert "hunter2" not in err and _listing(tmp_path) == before


def test_export_to_a_folder_is_one_line(finished, tmp_path, capsys):
    _, results = finished
    code = main(["export", str(results), "--trial", "0", "--seed", "0", "-o", str(tmp_path)])
    _refused(code, capsys, "-o", "is a folder")
    assert not any(tmp_path.iterdir())


def test_a_truncated_model_file_is_one_line_naming_it(finished, tmp_path, capsys):
    _, results = finished
    copy = _copy(results, tmp_path)
    model = copy / "models" / "t0.pt"
    model.write_bytes(model.read_bytes()[:500])
    before = _listing(tmp_path)
    code = main(["export", str(copy), "--trial", "0", "--seed", "0", "-o", str(tmp_path / "m.pt")])
    _refused(code, capsys, str(model), "cannot be read")
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("seed", [2**70, -1])
def test_a_noise_seed_beyond_64_bits_is_one_line(finished, tmp_path, capsys, seed):
    _, results = finished
    code = main(["sample", str(results), "--trial", "0", "--seed", "0", "--noise-seed", str(seed),
                 "-o", str(tmp_path / "s.png")])
    _refused(code, capsys, "--noise-seed", str(seed))
    assert not any(tmp_path.iterdir())


def test_compare_into_an_existing_file_is_one_line(finished, tmp_path, capsys):
    _, results = finished
    other = _copy(results, tmp_path, "u")  # the same study under another name
    (other / "study.yaml").write_text((other / "study.yaml").read_text().replace("name: t", "name: u"))
    with sqlite3.connect(other / "study.db") as conn:
        conn.execute("UPDATE studies SET study_name = 'u'")
    out = tmp_path / "out.html"
    out.write_text("mine")
    before = _listing(tmp_path)
    code = main(["compare", str(results), str(other), "--out", str(out)])
    _refused(code, capsys, "--out", "out.html")
    assert _listing(tmp_path) == before


def test_foreign_files_among_checkpoints_are_ignored_by_a_run_and_a_resume(finished, tmp_path,
                                                                           capsys, monkeypatch):
    import torch

    from ablate.training.checkpoints import CohortCheckpoint

    study = _study(tmp_path, "ck", checkpoint_minutes=0.0001)
    folder = tmp_path / "results" / "ck"
    folder.mkdir(parents=True)
    shutil.copy(finished[1] / "classifier.pt", folder)  # trained once, for the same data
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "cohort-abc.pt").write_text("not a checkpoint")
    (checkpoints / "random.pt").write_bytes(bytes(range(256)) * 8)
    torch.save({"format": 1, "members": "none"}, checkpoints / "cohort-def.pt")
    save = CohortCheckpoint.save

    def save_then_stop(self, *args):  # a run stopped right after its first checkpoint
        save(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(CohortCheckpoint, "save", save_then_stop)
    run = ["run", str(study), "--no-progress", "--no-report", "--results", str(tmp_path / "results")]
    assert main(run) == 130
    first = capsys.readouterr().err
    monkeypatch.setattr(CohortCheckpoint, "save", save)
    assert main(run) == 0
    resumed = capsys.readouterr().err
    assert "resuming 2 members" in resumed and "Traceback" not in first + resumed
    for err in (first, resumed):
        warned = [line for line in err.splitlines() if "warning" in line]
        assert len(warned) == 3 and all("not a checkpoint" in line for line in warned), err
    states = [t.state.name for t in load_store(f"sqlite:///{folder / 'study.db'}", "ck").get_trials()]
    assert states.count("COMPLETE") == 2
    assert {p.name for p in checkpoints.iterdir()} == {"cohort-abc.pt", "random.pt", "cohort-def.pt"}


# ------------------------------------------------------------------ 3. trackers
def test_an_unreachable_tracker_warns_once_and_the_study_finishes(finished, tmp_path, capsys):
    study = _study(tmp_path, "tr", tracking={"mlflow": {"uri": "http://127.0.0.1:9"}})  # the discard port
    (tmp_path / "results" / "tr").mkdir(parents=True)
    shutil.copy(finished[1] / "classifier.pt", tmp_path / "results" / "tr")
    assert main(["run", str(study), "--no-progress", "--results", str(tmp_path / "results")]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1 and "tracking.mlflow: nothing answers at 127.0.0.1:9" in warned[0], err
    assert (tmp_path / "results" / "tr" / "report.html").is_file()
