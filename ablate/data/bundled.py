"""The datasets that need no files: scikit-learn's 8×8 digits, and synthetic images of a hidden
low-dimensional mixture.

Owns: their loaders and options (`FORMATS`). Does not own: the splits and caps every dataset
gets (datasets.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ablate.data.dataset import Dataset
from ablate.errors import UserError


def _digits(options: dict[str, Any]) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    fraction = options.get("test_fraction", 0.2)
    if not 0.0 < fraction < 1.0:
        raise UserError(f"dataset.test_fraction must be between 0 and 1, got {fraction}.")
    digits = load_digits()
    n_test = math.ceil(fraction * len(digits.data))  # as train_test_split rounds it
    if min(n_test, len(digits.data) - n_test) < 10:
        raise UserError(f"dataset.test_fraction {fraction} leaves {n_test} of the {len(digits.data)} "
                        "digits for the test split; a split stratified by digit needs at least 10 "
                        "images on each side: give a test_fraction between 0.01 and 0.99.")
    x = (digits.data / 16.0).astype(np.float32)  # pixel values 0..16 → [0, 1]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, digits.target, test_size=fraction, stratify=digits.target, random_state=0)
    return Dataset("digits", x_tr, x_te, y_tr.astype(np.int64), y_te.astype(np.int64), (1, 8, 8))


def _synthetic(options: dict[str, Any]) -> Dataset:
    """Images of a hidden low-dimensional mixture: z ~ cluster + noise, x = sigmoid(A z)."""
    n_train, n_test = options.get("n_train", 512), options.get("n_test", 128)
    dim, classes = options.get("dim", 64), options.get("classes", 4)
    rng = np.random.default_rng(options.get("seed", 0))
    centers = rng.normal(0.0, 2.0, size=(classes, 4))
    mixing = rng.normal(0.0, 1.0, size=(4, dim))

    def draw(n):
        y = rng.integers(0, classes, size=n)
        z = centers[y] + rng.normal(0.0, 0.5, size=(n, 4))
        return (1.0 / (1.0 + np.exp(-z @ mixing))).astype(np.float32), y.astype(np.int64)

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    side = int(round(dim ** 0.5))
    return Dataset("synthetic", x_tr, x_te, y_tr, y_te, (1, side, side) if side * side == dim else None)


FORMATS = {"digits": (_digits, {"test_fraction": float}),
           "synthetic": (_synthetic, {"n_train": int, "n_test": int, "dim": int, "classes": int, "seed": "seed"})}
"""name → (loader, the options it accepts besides datasets.COMMON_OPTIONS)."""
