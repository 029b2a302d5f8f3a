"""Running the real CLI in a subprocess on tiny studies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY = """\
name: {name}
dataset: {{name: digits, train_size: 240, test_size: 60}}
model: {{hidden: [32]}}
train: {{epochs: {epochs}, batch_size: 64}}
eval: {{iwae_samples: 8}}
seeds: {seeds}
cohort_size: {cohort}
space:
  activation: [relu, tanh, exponential]
  latent_dim: [2, 4]
  kl_weight: [1.0]
"""


def tiny_study(tmp_path: Path, name: str = "tiny", epochs: int = 2, seeds: int = 2,
               cohort: str | int = "auto") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(name=name, epochs=epochs, seeds=seeds, cohort=cohort))
    return path


def ablate(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **kw)
