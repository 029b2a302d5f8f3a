"""One dataset's arrays, and what every format's loader shares.

Owns: `Dataset` (train, validation and test rows in [0, 1], labels, the image shape, and the
ground-truth factors where a generator knows them), a fixed seeded subset (`keep`), checks of
examples and labels read from a file, a dataset's `root:` folder, and a download checked by its
MD5. Does not own: any format (idx.py, cifar.py, celeba.py, npz.py, bundled.py, generated.py) or
the splits and caps every dataset gets (datasets.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ablate.errors import UserError


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test arrays, float32 in [0, 1], one flattened example per row."""

    name: str
    x_train: np.ndarray  # (n_train, D)
    x_test: np.ndarray  # (n_test, D)
    y_train: np.ndarray | None  # (n_train,) int labels, or None
    y_test: np.ndarray | None
    image_shape: tuple[int, int, int] | None  # (C, H, W) when the rows are images
    x_val: np.ndarray | None = None  # (n_val, D); None: no validation split
    y_val: np.ndarray | None = None
    # Ground-truth factors of variation, where the data were generated from known ones: their
    # names, how many values each takes, and per split an int64 (n, F) array of each row's
    # value index per factor (aligned with the rows of x_train / x_val / x_test).
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    f_train: np.ndarray | None = None
    f_val: np.ndarray | None = None
    f_test: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])


def keep(total: int, size: int | None, seed: int) -> np.ndarray:
    """The indices of a fixed, seeded random subset of `size` out of `total` (all when None)."""
    if size is None or size >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:size])


def check_rows(x: np.ndarray, where: str) -> np.ndarray:
    """An array of examples, one per row, → (N, D) float32; no rows, no values or no numbers is
    refused (`where` names the file and array)."""
    if x.dtype.kind not in "biuf":
        raise UserError(f"{where} holds values of type {x.dtype}, not numbers; store ints or floats.")
    if x.ndim == 0 or x.size == 0:
        raise UserError(f"{where} has shape {x.shape}, so no examples to train on; give N ≥ 1 "
                        "examples of at least one value each, one example per row.")
    return x.reshape(len(x), -1).astype(np.float32)


def check_labels(y: np.ndarray, rows: int, where: str) -> np.ndarray:
    """Class labels → int64 (n,): one per row of their split, whole numbers ≥ 0 (the classifier's
    class indices); anything else is refused (`where` names the file, and the array in it)."""
    if y.dtype.kind not in "biuf" or y.shape != (rows,):
        raise UserError(f"{where} holds labels of type {y.dtype} and shape {y.shape}, but its "
                        f"{rows} examples need one whole-number label each, shape ({rows},).")
    v = y.astype(np.float64)
    bad = ~(np.isfinite(v) & (v >= 0) & (v == np.floor(v)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{where} holds {int(bad.sum())} labels that are not whole numbers ≥ 0, the "
                        f"first {y[i]} at row {i}; give each example a class 0, 1, 2, ….")
    return y.astype(np.int64)


def root_folder(options: dict[str, Any], name: str, holds: str) -> Path:
    """The dataset's `root:` folder, required."""
    if "root" not in options:
        raise UserError(f"dataset.root is required for {name}: the folder holding {holds}.")
    return Path(os.path.expanduser(options["root"]))


def fetch(url: str, md5: str, into: Path) -> Path:
    """Download `url` into the folder `into` and check its MD5; raises OSError on a failure."""
    path = into / url.rpartition("/")[2]
    with urllib.request.urlopen(url, timeout=20) as resp, open(path, "wb") as out:
        shutil.copyfileobj(resp, out)
    if hashlib.md5(path.read_bytes()).hexdigest() != md5:
        raise OSError(f"checksum mismatch for {path.name}")
    return path
