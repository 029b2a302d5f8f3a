"""Trained models are kept and usable (issue 16): `ablate export` writes a member as TorchScript
that a process which never imports ablate loads and uses to reproduce the member's test ELBO
of runs.csv (as the store holds it); `ablate sample` draws prior samples; errors name what is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from tests.integration.helpers import ablate, load_store
from tests.studies import study_yaml

STUDY = study_yaml("kept", dataset={"test_size": 60}, model={"arch": "conv", "channels": [4], "hidden": []},
                   train={"batch_size": 50},
                   space={"activation": ["relu", "snake"], "family": ["vae", "gan"], "latent_dim": [2, 3]})


CHILD = """\
import json, sys
sys.modules["ablate"] = None  # any import of ablate would now fail
import torch
import torch.nn.functional as F

job = torch.load(sys.argv[1])
out = {}
for name, eps in job["eps"].items():
    m = torch.jit.load(job["files"][name])
    x = job["x_test"]
    mu, logvar = m.encode(x)
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = m.decode(z)
    assert logits.shape == x.shape
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)
    out[name] = (recon + kl).mean().item()
gan = torch.jit.load(job["gan"])
images = gan.generate(torch.randn(5, 2))
out["gan"] = [list(images.shape), images.min().item(), images.max().item()]
print(json.dumps(out))
"""


def test_export_round_trip_in_a_process_without_ablate_and_sample(tmp_path, capsys):
    from ablate.analysis.tables import runs_frame
    from ablate.cli import main
    from ablate.data.datasets import load_dataset
    from ablate.streams import Stream, stream_seed
    from ablate.study.loader import load_study
    from ablate.training.evaluation import NOISE_BLOCK
    from ablate.training.kept import export

    (tmp_path / "kept.yaml").write_text(STUDY)
    proc = ablate("run", "kept.yaml", "--no-progress", "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "results" / "kept"
    runs = runs_frame(load_store(f"sqlite:///{out / 'study.db'}", "kept"), load_study(out / "study.yaml"))
    assert (runs["status"] == "ok").all() and len(runs) == 8

    vaes = runs[runs["family"] == "vae"]
    files, eps = {}, {}
    for i, (_, r) in enumerate(vaes.iterrows()):
        name = f"t{r['trial']}"
        files[name] = str(tmp_path / f"{name}.pt")
        if i == 0:  # through the CLI once; the same function in this process for the others
            done = ablate("export", str(out), "--trial", str(r["trial"]), "--seed", str(r["seed"]),
                          "-o", files[name], cwd=tmp_path)
            assert done.returncode == 0 and done.stdout.startswith("exported: "), done.stderr
        else:
            export(out, int(r["trial"]), int(r["seed"]), tmp_path / f"{name}.pt")
        # the noise ablate's evaluation drew for this member's test ELBO (its stream 3, a
        # block of NOISE_BLOCK images at a time)
        g = torch.Generator().manual_seed(stream_seed(int(r["seed"]), Stream.EVAL))
        eps[name] = torch.randn(NOISE_BLOCK, int(r["latent_dim"]), generator=g)[:60]
    gan = runs[(runs["family"] == "gan") & (runs["latent_dim"] == 2)].iloc[0]
    export(out, int(gan["trial"]), 0, tmp_path / "gan.pt")
    data = load_dataset({"name": "digits", "train_size": 200, "test_size": 60})
    x_test = torch.as_tensor(data.x_test).reshape(-1, 1, 8, 8)
    torch.save({"files": files, "eps": eps, "x_test": x_test, "gan": str(tmp_path / "gan.pt")},
               tmp_path / "job.pt")
    (tmp_path / "child.py").write_text(CHILD)
    child = subprocess.run([sys.executable, "-I", str(tmp_path / "child.py"), str(tmp_path / "job.pt")],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    got = json.loads(child.stdout)
    for _, r in vaes.iterrows():  # float32 over 60 images: the same numbers up to summation order
        assert abs(got[f"t{r['trial']}"] - r["test_nelbo"]) <= 1e-4 * abs(r["test_nelbo"]), (r["trial"], got)
    assert got["gan"][0] == [5, 1, 8, 8] and 0.0 <= got["gan"][1] <= got["gan"][2] <= 1.0

    png = tmp_path / "grid.png"
    drawn = ablate("sample", str(out), "--trial", str(vaes.iloc[0]["trial"]), "--seed", "0",
                   "-n", "16", "-o", str(png), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert png.stat().st_size > 2000 and png.read_bytes()[:4] == b"\x89PNG"

    assert main(["export", str(out), "--trial", "99", "--seed", "0", "-o", str(tmp_path / "x.pt")]) == 2
    said = capsys.readouterr().err
    assert said.startswith("ablate: error: ") and "no trained model of trial 99" in said
    assert len(said.strip().splitlines()) == 1 and not (tmp_path / "x.pt").exists()
    # the kept files hold tensors, numbers and strings only: they load without running code
    kept = torch.load(out / "models" / f"t{gan['trial']}.pt", weights_only=True)
    assert set(kept["members"]) == {0} and kept["shape"] == [1, 8, 8]
