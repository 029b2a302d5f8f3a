"""The one way tests write a study YAML: a tiny study on the bundled digits, with any part changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY: dict[str, Any] = {
    "dataset": {"name": "digits", "train_size": 200, "test_size": 50},
    "model": {"hidden": [16]},
    "train": {"epochs": 2, "batch_size": 64},
    "eval": {"iwae_samples": 4},
    "seeds": 1,
    "space": {"activation": ["relu", "tanh"]},
}
"""Seconds to train on 2 cores: two activations, one seed, two epochs."""


def study_yaml(name: str, **changes: Any) -> str:
    """The tiny study named `name` with `changes`, as YAML text: a section given as a mapping
    updates the tiny one key by key (a key given None is dropped); any other value replaces it
    (None drops the section)."""
    doc: dict[str, Any] = {"name": name}
    for key in dict.fromkeys([*TINY, *changes]):
        value = changes.get(key, TINY.get(key))
        if isinstance(value, dict) and isinstance(TINY.get(key), dict):
            value = {k: v for k, v in {**TINY[key], **value}.items() if v is not None}
        if value is not None:
            doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)


def write_study(folder: Path, name: str, **changes: Any) -> Path:
    """`study_yaml(name, **changes)` written to folder/<name>.yaml."""
    path = Path(folder) / f"{name}.yaml"
    path.write_text(study_yaml(name, **changes))
    return path
