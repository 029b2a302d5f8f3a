"""Datasets by name: the digits, MNIST-format IDX files, CIFAR-10, CelebA, a user's npz arrays,
synthetic data, sprites and photograph patches — each format its own module, registered here
with the options it accepts.

Owns: the registry (`DATASETS`, `DATASET_OPTIONS`), loading a study's `dataset:` section,
refusing values no member could train on, the optional size caps, and the fixed validation
split (both take a row's label and ground-truth factors along with it). Every loader refuses a
malformed file (wrong shape, dtype, size or label count; a pickle that asks for anything but
arrays) with one `UserError` line naming the file and the fix, before anything is written and
without running its contents. Does not own: batching (the fleet gathers batches by index on
the device) or validation of YAML keys (the study's loader checks them against
`DATASET_OPTIONS`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from ablate.data import bundled, celeba, cifar, generated, idx, npz
from ablate.data.dataset import Dataset, keep
from ablate.errors import UserError
from ablate.registry import Registry
from ablate.streams import CAP_SEEDS, VAL_SEED

VAL_FRACTION = 0.1
"""The share of the training split held out for validation unless `val_fraction` says otherwise."""

# Keys each dataset accepts besides `name` (the study's rules reject others with a suggestion);
# "fraction" is a number in [0, 1), "shape" a list [C, H, W] of positive whole numbers, "seed" a
# whole number ≥ 0.
COMMON_OPTIONS = {"train_size": int, "test_size": int, "val_fraction": "fraction"}
_ALL = {**bundled.FORMATS, **idx.FORMATS, **cifar.FORMATS, **celeba.FORMATS, **npz.FORMATS,
        **generated.FORMATS}
_FORMATS = {name: _ALL[name] for name in ("digits", "mnist", "fashion_mnist", "kmnist", "cifar10",
                                          "celeba", "npz", "synthetic", "sprites", "patches")}
"""Every format module's loaders and options, in the order `ablate list datasets` shows them."""
DATASET_OPTIONS: dict[str, dict[str, type | str]] = {name: options for name, (_, options) in _FORMATS.items()}
DATASETS: Registry[Callable[[dict[str, Any]], Dataset]] = Registry("dataset")
for _name, (_loader, _) in _FORMATS.items():
    DATASETS.register(_name, _loader)


def load_dataset(options: dict[str, Any], unit: bool = False) -> Dataset:
    """Load the dataset a study's `dataset:` section describes (validated keys): its values
    checked (finite; in [0, 1] when `unit`: a Bernoulli likelihood or a GAN's sigmoid needs
    it), size caps, then the validation split out of the (capped) training split, unless the
    files bring their own."""
    loader = DATASETS.get(options["name"])
    data = loader(options)
    check_values(data, _origin(options), unit)
    data = _cap(data, options.get("train_size"), options.get("test_size"))
    if data.x_val is not None:
        return data
    fraction = options.get("val_fraction", VAL_FRACTION)
    n = len(data.x_train)
    if fraction and _val_size(n, fraction) >= n:
        raise UserError(f"{_origin(options)}: the training split holds {n} row(s), too few to hold out "
                        f"a validation split (val_fraction {fraction}) and still train on the rest; "
                        "give it more rows (train_size) or a smaller val_fraction, or set "
                        "val_fraction: 0.")
    return split_validation(data, fraction)


def _origin(options: dict[str, Any]) -> str:
    """Where a dataset's values come from, for error messages."""
    for key in ("path", "root"):
        if key in options:
            return f"dataset.{key} {os.path.expanduser(str(options[key]))}"
    return f"dataset {options['name']}"


def check_values(data: Dataset, origin: str, unit: bool) -> None:
    """Refuse values no member could train on, before anything is written: a NaN or inf in
    any split (every member would fail on it), or, when `unit`, values outside [0, 1]."""
    for split, x in (("training", data.x_train), ("validation", data.x_val), ("test", data.x_test)):
        if x is None:
            continue
        bad = ~np.isfinite(x).all(1)
        if bad.any():
            raise UserError(f"{origin}: the {split} split holds non-finite values (NaN or inf) "
                            f"in {int(bad.sum())} of its {len(x)} rows, the first at row "
                            f"{int(np.flatnonzero(bad)[0])}; drop or repair those rows.")
        if unit and len(x) and (x.min() < 0.0 or x.max() > 1.0):
            raise UserError(f"{origin}: the {split} split spans [{x.min():g}, {x.max():g}], but a "
                            "Bernoulli likelihood (and a GAN's sigmoid output) needs values in "
                            "[0, 1]; scale the data, or use model.likelihood: gaussian.")


def split_validation(data: Dataset, fraction: float) -> Dataset:
    """Hold out `fraction` of the training split for validation: seeded (VAL_SEED), stratified
    by label where every class has at least two examples; 0 leaves no validation split."""
    from sklearn.model_selection import train_test_split

    if fraction == 0:
        return data
    n_val = _val_size(len(data.x_train), fraction)
    y = data.y_train
    counts = np.unique(y, return_counts=True)[1] if y is not None else np.array([])
    both_sides = n_val >= len(counts) and len(data.x_train) - n_val >= len(counts)
    stratify = y if len(counts) and counts.min() >= 2 and both_sides else None
    index = np.arange(len(data.x_train))
    train, val = train_test_split(index, test_size=n_val, random_state=VAL_SEED, stratify=stratify)
    return replace(data, **_rows(data, "train", np.sort(train), "train"),
                   **_rows(data, "train", np.sort(val), "val"))


def _val_size(n_train: int, fraction: float) -> int:
    """How many of `n_train` training rows the validation split takes: at least one."""
    return max(1, round(fraction * n_train))


def _cap(data: Dataset, train_size: int | None, test_size: int | None) -> Dataset:
    """Keep a fixed, seeded random subset of each split (for quick studies and tests)."""
    rows: dict[str, np.ndarray | None] = {}
    for split, size in (("train", train_size), ("test", test_size)):
        rows |= _rows(data, split, keep(len(getattr(data, f"x_{split}")), size, CAP_SEEDS[split]), split)
    return replace(data, **rows)


def _rows(data: Dataset, source: str, index: np.ndarray, into: str) -> dict[str, np.ndarray | None]:
    """The rows `index` of split `source`: its examples, labels and factors, as split `into`'s
    fields (None stays None)."""
    return {f"{a}_{into}": None if (v := getattr(data, f"{a}_{source}")) is None else v[index]
            for a in "xyf"}
