"""The real CLI on tiny studies: outputs, report rebuild, listing, bad input."""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest

from tests.integration.helpers import ablate, tiny_study
from tests.studies import write_study


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
    # where the time went: every phase the run went through, in run order, and what no phase holds
    lines = proc.stderr[proc.stderr.index("where the time went"):].splitlines()[1:]
    phases = [line.split()[0] for line in lines if not line.startswith("    ")]
    assert phases == ["setup", "training", "evaluation", "store", "report", "other"], lines
    md = (out / "report.md").read_text()
    assert "Where that time went, phase by phase" in md and "| training |" in md and "| evaluation |" in md
    for name in ("study.db", "study.yaml", "runs.csv", "epochs.csv", "report.html", "report.md",
                 "figures/heatmap.png", "figures/ranking.png", "figures/curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3 * 2 * 2
    assert not runs.duplicated(["activation", "latent_dim", "kl_weight", "seed"]).any()
    for col in ("activation", "latent_dim", "kl_weight", "seed", "status", "test_nelbo",
                "test_recon", "test_kl", "test_nll", "active_units", "mutual_info", "dead_units",
                "probe_accuracy", "epochs_run", "train_seconds", "val_nelbo", "val_recon", "val_kl",
                "val_nll", "val_active_units", "val_probe_accuracy", "fid", "kid", "precision",
                "recall", "class_coverage", "val_fid", "cohort", "cohort_members", "cohort_seconds"):
        assert col in runs.columns, col
    ok = runs[runs["status"] == "ok"]
    assert len(ok) >= 8 and ok["test_nll"].notna().all()
    epochs = pd.read_csv(out / "epochs.csv")
    assert {"train_loss", "train_recon", "train_kl", "val_nelbo", "val_recon", "val_kl", "epoch"} <= set(epochs.columns)
    assert "test_nelbo" not in epochs.columns  # the test split is evaluated once, at the end
    assert epochs["epoch"].max() == 2
    assert ok["fid"].notna().all() and ((ok["class_coverage"] > 0) & (ok["class_coverage"] <= 1)).all()
    cohorts = runs.groupby("cohort")[["cohort_members", "cohort_seconds"]].nunique()
    assert (cohorts == 1).all().all(), "a cohort's members agree on its size and wall time"
    assert runs.groupby("cohort").size().le(runs.groupby("cohort")["cohort_members"].first()).all()
    assert (out / "classifier.pt").is_file()


class _Page(HTMLParser):
    """Collects a report's images, tables (rows of cell texts), headings and script tags."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.headings, self.scripts = [], [], [], 0
        self._cell = self._heading = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag in ("h2", "h3"):
            self._heading = ""
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None
        elif tag in ("h2", "h3") and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._heading is not None:
            self._heading += data


def test_report_html_every_section_image_and_table(finished):
    tmp, _, _ = finished
    out = tmp / "results" / "tiny"
    page = _Page()
    page.feed((out / "report.html").read_text())
    for section in ("Summary", "Setup", "Results", "Statistics", "Posterior collapse and dead units",
                    "Images", "Cost", "Per cell", "Failures", "Reproduce"):
        assert section in page.headings, section
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert figures >= {"ranking.png", "heatmap.png", "curves.png", "rate_distortion.png",
                       "cd_diagram.png", "collapse.png", "kl_per_dim.png", "dead_units.png",
                       "reconstructions.png", "samples.png", "manifold.png", "cost.png"}
    assert len(page.images) == len(figures)  # each figure embedded once
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert len(page.tables) >= 6
    for table in page.tables:
        header, *rows = table
        assert header and rows, "an empty table"
        assert all(len(r) == len(header) and all(c != "" for c in r) for r in rows)
    assert page.scripts == 1  # only the report's own table-sorting script
    md = (out / "report.md").read_text()
    for name in figures:
        assert f"](figures/{name})" in md


# Runs the CLI in-process and prints the torch modules it loaded (the analysis side must load none).
NO_TORCH = """\
import sys
from ablate.cli import main
code = main(sys.argv[1:])
print([m for m in sys.modules if m == "torch" or m.startswith("torch.")])
sys.exit(code)
"""


def _torch_free(*args: str, cwd) -> list[str]:
    """The torch modules `ablate ARGS` imported (it must succeed)."""
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_report_rebuilds_from_store_and_escapes_user_text(finished):
    tmp, study, _ = finished
    out = tmp / "results" / "tiny"
    text = study.read_text()
    (out / "study.yaml").write_text("description: \"<b>bold & </b>\"\n" + text)
    (out / "report.html").unlink()
    loaded = _torch_free("report", str(out), cwd=tmp)  # the analysis side needs no torch
    (out / "study.yaml").write_text(text)
    assert loaded == []
    page = (out / "report.html").read_text()
    assert "<b>bold" not in page and html.escape("<b>bold & </b>") in page


def test_run_escapes_user_strings_everywhere(tmp_path):
    study = tiny_study(tmp_path, name="xss", epochs=1, seeds=2)
    evil = '<script>alert("x")</script> & <img src=x>'
    study.write_text(f"description: {json.dumps(evil)}\n" + study.read_text())
    proc = ablate("run", str(study), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "results" / "xss" / "report.html").read_text()
    assert evil not in page and "<img src=x>" not in page and 'alert("x")</script>' not in page
    assert html.escape(evil) in page


def test_compare_puts_studies_side_by_side(finished):
    tmp, _, _ = finished
    other = tiny_study(tmp, name="tiny_b", epochs=1, seeds=2)
    assert ablate("run", str(other), "--no-progress", cwd=tmp).returncode == 0
    assert _torch_free("compare", "results/tiny", str(other), cwd=tmp) == []
    page = _Page()
    page.feed((tmp / "results" / "compare-tiny-tiny_b" / "report.html").read_text())
    side = next(t for t in page.tables if t[0][0] == "activation")
    assert side[0] == ["activation", "tiny: test_nll", "tiny: avg rank", "tiny_b: test_nll",
                       "tiny_b: avg rank"]
    assert {r[0] for r in side[1:]} == {"relu", "tanh", "exponential"}
    assert len(page.images) == 1
    lone = ablate("compare", "results/tiny", cwd=tmp)
    assert lone.returncode == 2 and "two or more" in lone.stderr


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
    assert all(n in data.stdout for n in ("digits", "mnist", "fashion_mnist", "kmnist", "npz", "synthetic",
                                             "sprites", "patches"))


@pytest.mark.parametrize("text,expected", [
    ("name: x\nspace: [unclosed\n", "malformed YAML"),
    ("name: x\nspace: {activation: [relu, swishh]}\n", "unknown activation 'swishh'. Did you mean 'swish'?"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, text, expected):
    """The real process's exit code and stderr; every other bad input is checked in process
    (tests/integration/test_hostile_cli.py, tests/unit/test_study.py)."""
    (tmp_path / "s.yaml").write_text(text)
    proc = ablate("run", "s.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert expected in proc.stderr and "s.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_unreachable_storage_is_one_line_without_its_password(tmp_path):
    study = tiny_study(tmp_path)
    for url, expected in [("postgresql://me:hunter2@127.0.0.1:1/x", "me:***@127.0.0.1:1/x"),
                          ("postgres:/nowhere", "is not a database URL")]:
        proc = ablate("run", str(study), "--storage", url, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "hunter2" not in proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert "cannot open it" in proc.stderr or "127.0.0.1" not in url
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


def test_conv_on_data_without_an_image_shape_is_refused(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", x_train=rng.random((40, 12)), x_test=rng.random((10, 12)))
    (tmp_path / "s.yaml").write_text("name: x\ndataset: {name: npz, path: flat.npz}\n"
                                     "model: {arch: conv}\n")
    proc = ablate("run", "s.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("s.yaml: model.arch: conv needs images, but dataset 'npz' has flat rows of 12 values "
            "and no image shape; give the npz a shape: [C, H, W]") in proc.stderr
    assert not (tmp_path / "results").exists()


def _run_tiny(tmp_path, name: str, **changes):
    """Run the tiny study with `changes`; its results folder and runs.csv."""
    write_study(tmp_path, name, **changes)
    proc = ablate("run", f"{name}.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "results" / name
    return out, pd.read_csv(out / "runs.csv")


def test_conv_study_runs_and_reports_images(tmp_path):
    """A tiny conv study end to end: runs.csv names the architecture, the report draws images."""
    out, runs = _run_tiny(tmp_path, "c", model={"arch": "conv", "channels": [4, 8], "hidden": []},
                          space={"activation": ["relu", "tanh"], "latent_dim": [2]})
    assert (runs["arch"] == "conv").all() and (runs["channels"] == "4-8").all()
    assert (runs["status"] == "ok").all() and runs["test_nll"].notna().all()
    for name in ("reconstructions", "samples", "manifold"):
        assert (out / "figures" / f"{name}.png").is_file(), name
    report = (out / "report.md").read_text()
    assert "1×8×8 = 64 pixels" in report
    assert "conv (4×4 stride-2 convolutions with channels [4, 8], no fully connected hidden layer" in report


def test_families_decoder_and_dropout_axes_reach_the_report(tmp_path):
    """Families, an encoder × decoder axis, dropout and a learnable activation, end to end."""
    out, runs = _run_tiny(tmp_path, "f", model={"latent_dim": 2}, seeds=2, report={"metric": "test_recon"},
                          space={"family": ["ae", "vae"], "kl_weight": [0.5, 1.0], "activation": ["relu", "snake"],
                                 "decoder_activation": ["relu", "tanh"], "dropout": [0.0, 0.2]})
    assert len(runs) == (8 + 16) * 2  # an ae is not multiplied by kl_weight
    assert runs.loc[runs["family"] == "ae", "kl_weight"].isna().all()
    report = (out / "report.md").read_text()
    for heading in ("## Across families", "## Encoder × decoder activations",
                    "## Dropout: the train / validation gap", "## Learned activations"):
        assert heading in report, heading
    for name in ("encoder_decoder", "learned_shapes"):
        assert (out / "figures" / f"{name}.png").is_file(), name
    assert "snake→tanh" in report


def test_gans_beside_vaes_reach_the_report(tmp_path):
    """GAN and VAE members in one study: the GAN section and the families compared on FID."""
    out, runs = _run_tiny(tmp_path, "g", dataset={"test_size": 60}, model={"latent_dim": 2}, train={"lr": 5.0e-4},
                          seeds=2, report={"metric": "fid"},
                          space={"family": ["vae", "gan"], "kl_weight": [0.5, 1.0], "activation": ["relu", "tanh"]})
    gans = runs[runs["family"] == "gan"]
    assert len(gans) == 2 * 2 and gans["kl_weight"].isna().all()  # kl_weight does not multiply GANs
    assert gans["fid"].notna().all() and gans["test_nll"].isna().all()
    report = (out / "report.md").read_text()
    assert "## GANs" in report and "The generative families on sample quality" in report
    assert (out / "figures" / "gan_samples.png").is_file()


def test_a_mixed_study_reports_every_number_per_stratum(tmp_path):
    """Two families in one study: rankings, tests and sentences are each family's own, and no
    mean pooled over both families appears anywhere in the report."""
    out, runs = _run_tiny(tmp_path, "m", model={"latent_dim": 2}, seeds=2, report={"metric": "test_recon"},
                          space={"family": ["ae", "vae"], "activation": ["relu", "tanh", "elu"]})
    ranking, comparisons = pd.read_csv(out / "ranking.csv"), pd.read_csv(out / "comparisons.csv")
    assert sorted(set(ranking["family"])) == ["ae", "vae"] and len(ranking) == 6
    assert sorted(set(comparisons["family"])) == ["ae", "vae"] and set(comparisons["slice"]) == {"all"}
    for (family, act), part in runs.groupby(["family", "activation"]):
        row = ranking[(ranking["family"] == family) & (ranking["activation"] == act)].iloc[0]
        assert row["mean"] == pytest.approx(part["test_recon"].mean()) and row["n"] == 2
    report = (out / "report.md").read_text()
    sections = {part.split("\n", 1)[0]: part for part in report.split("\n## ")}
    headline = sections["Summary"] + sections["Results"] + sections["Statistics"]
    own = {f"{v:.2f}" for v in ranking["mean"]}
    pooled = {f"{v:.2f}" for v in runs.groupby("activation")["test_recon"].mean()} - own
    assert pooled and not any(p in headline for p in pooled), pooled
    assert "### Family = ae" in report and "### Family = vae" in report
    quality = sections["Sample quality"]  # only the VAE samples: no empty heading for the ae
    assert "### Family = vae" in quality and "### Family = ae" not in quality
    assert "no number is pooled across strata" in report
    assert "cannot tell with 2 blocks" in report  # 2 seeds: the design cannot reach α
    assert "Warning — the design cannot reach α." in report


@pytest.mark.parametrize("round_", range(3))
def test_two_workers_started_at_once_with_other_settings_never_share_a_store(tmp_path, round_):
    """The settings check and the store's creation are one step under the study's lock: of two
    workers started together with different epochs, one trains, the other exits 2 naming the
    difference, and nothing it would have trained is in the store."""
    from tests.integration.helpers import start

    tiny_study(tmp_path, epochs=1, seeds=1)
    procs = [start("run", "tiny.yaml", "--no-progress", "--no-report", *extra, cwd=tmp_path)
             for extra in ((), ("--set", "train.epochs=2"))]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)][1]
    assert "with other settings (epochs: " in loser and "Traceback" not in loser, loser
    runs = ablate("report", "results/tiny", cwd=tmp_path)
    assert runs.returncode == 0, runs.stderr
    frame = pd.read_csv(tmp_path / "results" / "tiny" / "runs.csv")
    assert frame["epochs"].nunique() == 1 and (frame["epochs_run"] == frame["epochs"]).all()
