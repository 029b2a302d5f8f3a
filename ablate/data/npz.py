"""A user's own arrays: an npz archive with x_train and x_test (and y_train, y_test, x_val, y_val).

Owns: reading the archive without unpickling (an object array is refused), the arrays' checks,
the image shape (`shape:` or 2-d images), and the loader and its options (`FORMATS`).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ablate.data.dataset import Dataset, check_labels, check_rows
from ablate.errors import UserError


def _npz(options: dict[str, Any]) -> Dataset:
    if "path" not in options:
        raise UserError("dataset.path is required for npz: a .npz file with arrays x_train and "
                        "x_test (and optionally y_train, y_test, x_val, y_val).")
    path = Path(os.path.expanduser(options["path"]))
    if not path.is_file():
        raise UserError(f"dataset.path: {path} does not exist.")
    arrays = _npz_arrays(path)
    for key in ("x_train", "x_test"):
        if key not in arrays:
            raise UserError(f"dataset.path: {path} has no array '{key}' "
                            f"(it has {', '.join(sorted(arrays)) or 'none'}).")
    xs = {k: check_rows(arrays[k], f"dataset.path: {path}: {k}")
          for k in ("x_train", "x_val", "x_test") if k in arrays}
    if len({x.shape[1] for x in xs.values()}) > 1:
        raise UserError(f"dataset.path: {', '.join(xs)} in {path} have different widths.")
    shape = _npz_shape(options.get("shape"), arrays["x_train"], xs["x_train"].shape[1], path)
    labels = all(k in arrays for k in ("y_train", "y_test")) and ("x_val" not in xs or "y_val" in arrays)
    y = {k: check_labels(arrays[k], len(xs["x" + k[1:]]), f"dataset.path: {path}: {k}")
         if labels and k in arrays else None for k in ("y_train", "y_val", "y_test")}
    return Dataset("npz", xs["x_train"], xs["x_test"], y["y_train"], y["y_test"], shape,
                   xs.get("x_val"), y["y_val"])


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the npz file at `path`, read without unpickling: an object array is refused."""
    fix = f"save numeric arrays with numpy.savez('{path.name}', x_train=..., x_test=...)"
    try:
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                npy = f.read(6) == b"\x93NUMPY"
            what = "a .npy file (one array)" if npy else "not a zip archive (a text or truncated file?)"
            raise UserError(f"dataset.path: {path} is {what}, not an npz archive; {fix}.")
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        raise UserError(f"dataset.path: cannot read the npz archive {path} ({exc}); {fix}.") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a zip member that is not a .npy comes back as bytes
            raise UserError(f"dataset.path: {path} holds '{key}', which is not a numpy array; {fix}.")
    return arrays


def _npz_shape(given: list[int] | None, x: np.ndarray, width: int, path: Path) -> tuple | None:
    """An npz's image shape (C, H, W): `shape:` when given (it must hold each row's values),
    else (1, H, W) for arrays of 2-d images, else none."""
    if given is not None:
        if int(np.prod(given)) != width:
            raise UserError(f"dataset.shape: {list(given)} holds {int(np.prod(given))} values, but "
                            f"each image in {path} has {width}; give [C, H, W] with C·H·W = {width}.")
        return tuple(int(v) for v in given)
    return (1, int(x.shape[1]), int(x.shape[2])) if x.ndim == 3 else None


FORMATS = {"npz": (_npz, {"path": str, "shape": "shape"})}
"""name → (loader, the options it accepts besides datasets.COMMON_OPTIONS)."""
