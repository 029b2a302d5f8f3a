"""A study of a user's own module (model.module) end to end: it trains, keeps each member as
the module's own state_dict, exports, reports, resumes exactly after a kill, and every bad
module or setting is one line, exit 2, before anything is written."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from ablate.analysis.report import build_report
from ablate.cli import main
from ablate.run.runner import run_study
from ablate.study.loader import load_study
from tests.studies import write_study

REPO = Path(__file__).resolve().parents[2]
MODEL = {"hidden": None, "module": "tests.own_models:mlp_vae", "options": {"width": 16}, "latent_dim": 3}
SPACE = {"activation": ["relu", "snake"], "options": [{"width": 16}, {"width": 24}]}
METRICS = ["test_nelbo", "test_nll", "active_units", "dead_units", "val_nll", "fid"]


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    path = write_study(tmp, "own", model=MODEL, space=SPACE, seeds=2)
    study = load_study(path)
    out = run_study(study, tmp / "results", progress=False)
    build_report(study, out)
    return out, pd.read_csv(out / "runs.csv")


def test_every_member_trains_and_the_options_are_an_axis(own):
    _, runs = own
    assert len(runs) == 8 and (runs["status"] == "ok").all()
    assert set(runs["options"]) == {'{"width": 16}', '{"width": 24}'}
    assert runs["module"].eq("tests.own_models:mlp_vae").all() and runs["hidden"].isna().all()
    assert runs["cohort"].nunique() == 1, "one cohort: four vmapped groups"
    assert runs[METRICS].notna().all().all()


def test_a_kept_member_is_the_modules_own_state_dict_and_exports(own, tmp_path):
    from tests.own_models import mlp_vae

    out, runs = own
    row = runs[(runs["activation"] == "relu") & (runs["options"] == '{"width": 24}')].iloc[0]
    kept = torch.load(out / "models" / f"t{row['trial']}.pt", weights_only=True)["members"][int(row["seed"])]
    module = mlp_vae(torch.nn.ReLU, 3, (1, 8, 8), width=24)
    module.load_state_dict(kept["weights"])  # strict: exactly the module's keys
    assert main(["export", str(out), "--trial", str(row["trial"]), "--seed", str(row["seed"]),
                 "-o", str(tmp_path / "m.pt")]) == 0
    traced = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(traced.encode(x)[0], module.encode(x)[0])
    assert traced.decode(torch.zeros(2, 3)).shape == (2, 1, 8, 8)
    assert main(["sample", str(out), "--trial", str(row["trial"]), "--seed", str(row["seed"]), "-n", "4",
                 "-o", str(tmp_path / "samples.png")]) == 0
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_the_report_names_the_module(own):
    out, _ = own
    md = (out / "report.md").read_text()
    assert "the study's own module `tests.own_models:mlp_vae`" in md
    assert "Trainable weights per member: 2,294 to 3,454." in md  # relu at width 16 … snake (α per unit) at 24
    assert "Training: Adam at lr 0.001, batch 64, 2 epochs; the same values for every activation" in md
    assert "weight initialisation of each activation" not in md  # the factory's init, not ablate's


def test_a_killed_study_of_a_module_resumes_with_the_same_numbers(own, tmp_path, monkeypatch):
    from tests.integration.helpers import ablate, killed_at

    _, whole = own
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    path = write_study(tmp_path, "own", model=MODEL, space=SPACE, seeds=2, checkpoint_minutes=1.0e-6)
    killed_at(1, 2, "run", str(path), "--no-progress", "--no-report", cwd=tmp_path)  # saved at epoch 1
    rerun = ablate("run", str(path), "--no-progress", cwd=tmp_path)
    assert rerun.returncode == 0 and "resuming" in rerun.stderr, rerun.stderr[-2000:]
    resumed = pd.read_csv(tmp_path / "results" / "own" / "runs.csv")
    joined = whole.merge(resumed, on=["activation", "options", "seed"], suffixes=("", "_resumed"))
    assert len(joined) == len(whole) == 8
    for column in METRICS:
        assert joined[column].tolist() == joined[f"{column}_resumed"].tolist(), column


@pytest.fixture
def broken_module(tmp_path, monkeypatch):
    (tmp_path / "broken_models.py").write_text(textwrap.dedent("""
        import torch
        raise RuntimeError("CUDA driver not found")
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("broken_models", None)


@pytest.mark.parametrize("model,space,pattern", [
    ({"module": "broken_models:make"}, {}, "importing 'broken_models:make' raised RuntimeError: CUDA driver not found"),
    ({"module": "tests.own_models:raises"}, {}, "raised ValueError: width must be a power of two"),
    ({"module": "tests.own_models:batchnorm"}, {}, "layer 'encoder.2' (BatchNorm1d) keeps running statistics"),
    ({"module": "tests.own_models:wrong_shape"}, {}, "decode() returned shape (2, 63)"),
    ({"module": "tests.own_models:no_decode"}, {}, "without decode"),
    ({"module": "tests.own_models:mlp_vae", "hidden": [16]}, {}, "model.hidden: shapes the built-in model"),
    ({"module": "tests.own_models:mlp_vae"}, {"init": ["kaiming", "default"]}, "space.init: shapes the built-in"),
    ({"options": {"width": 8}}, {}, "model.options: holds keyword arguments for model.module's factory"),
    ({"module": "examples/resnet_vae.py"}, {}, "model.module: must be an import path package.module:factory"),
    ({"module": "tests.own_models:mlp_vae", "options": {"width": [1, None]}}, {}, "model.options: width: must be"),
    ({"module": "tests.own_models:mlp_vae"}, {"activation": ["relu", "maxout:3"]},
     "space.activation: is maxout:3, which widens the layer before it to 3 pieces per unit"),
    ({"module": "tests.own_models:mlp_vae"}, {"activation": ["maxout:12"]},
     "maxout takes a whole number of pieces from 2 to 8"),
])
def test_a_bad_module_or_setting_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, broken_module,
                                                                       model, space, pattern):
    monkeypatch.chdir(tmp_path)
    write_study(tmp_path, "bad", model={"hidden": None, "latent_dim": 2, **model}, space={"activation": ["relu"], **space},
                train={"epochs": 1})
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", "bad.yaml", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert pattern in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("bad.yaml") or "bad.yaml" in err.split(":")[0] or "bad.yaml" in err, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == before
