"""`ablate run` on studies that must be refused before anything is written: a plug-in that is
not elementwise, a device that is not there, an axis no family has, a metric no family
produces. In-process through `ablate.cli.main`: exit 2, one line, no traceback, no folder."""

from __future__ import annotations

import sys
import textwrap

import pytest

from ablate.cli import main
from tests.studies import write_study


def _study(folder, name: str, model: dict | None = None, **changes):
    """The tiny study with a smaller model and one epoch."""
    return write_study(folder, name, model={"hidden": [8], "latent_dim": 2, **(model or {})},
                       train={"epochs": 1}, eval={"iwae_samples": 2}, **changes)


@pytest.fixture
def glu_plugin(tmp_path, monkeypatch):
    (tmp_path / "mixers.py").write_text(textwrap.dedent("""
        from torch import nn
        def glu():
            return nn.GLU(dim=-1)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("mixers", None)


@pytest.mark.parametrize("what,body,extra,pattern", [
    ("a GLU plug-in", {"space": {"activation": ["relu", "mixers:glu"]}}, (),
     "activation 'mixers:glu' turns a (2, 4, 6)"),
    ("cuda asked on the command line", {"space": {"activation": ["relu"]}}, ("--set", "device=cuda:0"),
     "--set device=cuda:0: device: 'cuda:0' was asked for but no CUDA device"),
    ("kl_weight for an ae", {"model": {"family": "ae"}, "space": {"activation": ["relu"], "kl_weight": [1.0, 2.0]}},
     (), "space.kl_weight: applies to vae only"),
    ("fid for an ae", {"model": {"family": "ae"}, "space": {"activation": ["relu"]}, "report": {"metric": "fid"}},
     (), "report.metric: fid is measured for gan, vae only"),
])
def test_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, glu_plugin, what, body, extra, pattern):
    import torch

    if "cuda" in what and torch.cuda.is_available():
        pytest.skip("a CUDA device is there")
    monkeypatch.chdir(tmp_path)
    _study(tmp_path, "h", **body)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", "h.yaml", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert pattern in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == before


def test_a_member_too_large_for_memory_is_refused_with_the_estimate(tmp_path, monkeypatch, capsys):
    from ablate.run import machine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(machine, "available_ram", lambda: 64 << 20)  # a 64 MiB machine
    _study(tmp_path, "big", model={"hidden": [65536, 65536]}, device="cpu", space={"activation": ["relu"]})
    assert main(["run", "big.yaml", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "its largest member needs about 128.4 GiB" in err and "cpu has 0.1 GiB free" in err, err
    assert not (tmp_path / "results").exists()


def test_two_runs_of_one_study_name_in_two_folders_are_compared_as_two(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _study(tmp_path, "t")
    assert main(["run", "t.yaml", "--results", "a", "--no-progress", "--no-report"]) == 0
    assert main(["run", "t.yaml", "--results", "b", "--no-progress", "--no-report", "--set", "train.epochs=2"]) == 0
    assert main(["compare", "a/t", "b/t"]) == 0
    report = (tmp_path / "results" / "compare-t-t" / "report.md").read_text()
    assert "t (a/t): dataset digits" in report and "t (b/t): dataset digits" in report
    capsys.readouterr()
    assert main(["compare", "a/t", "a/t"]) == 2
    assert "a results folder is given twice" in capsys.readouterr().err
