"""Datasets: the bundled digits, MNIST-format IDX files, a user's npz arrays, synthetic data.

Owns: reading, scaling to [0, 1], the fixed train / validation / test splits, optional size
caps, labels.
Does not own: batching (the fleet gathers batches by index on the device) or validation of
YAML keys (study.py checks them against `DATASET_OPTIONS`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ablate.errors import UserError
from ablate.registry import Registry


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test arrays, float32 in [0, 1], one flattened example per row."""

    name: str
    x_train: np.ndarray  # (n_train, D)
    x_test: np.ndarray  # (n_test, D)
    y_train: np.ndarray | None  # (n_train,) int labels, or None
    y_test: np.ndarray | None
    image_shape: tuple[int, int] | None  # (H, W) when the rows are images
    x_val: np.ndarray | None = None  # (n_val, D); None: no validation split
    y_val: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])


VAL_FRACTION = 0.1
"""The share of the training split held out for validation unless `val_fraction` says otherwise."""
VAL_SEED = 3
"""The validation split's own seed: fixed, independent of member seeds, the same for a study."""

# Keys each dataset accepts besides `name` (study.py rejects others with a suggestion);
# "fraction" is a number in [0, 1).
COMMON_OPTIONS = {"train_size": int, "test_size": int, "val_fraction": "fraction"}
DATASET_OPTIONS: dict[str, dict[str, type]] = {
    "digits": {"test_fraction": float},
    "mnist": {"root": str, "download": bool},
    "fashion_mnist": {"root": str, "download": bool},
    "kmnist": {"root": str, "download": bool},
    "npz": {"path": str},
    "synthetic": {"n_train": int, "n_test": int, "dim": int, "classes": int, "seed": int},
}

DATASETS: Registry[Callable[[dict[str, Any]], Dataset]] = Registry("dataset")


def load_dataset(options: dict[str, Any]) -> Dataset:
    """Load the dataset a study's `dataset:` section describes (validated keys): size caps
    first, then the validation split out of the (capped) training split, unless the files
    bring their own."""
    loader = DATASETS.get(options["name"])
    data = _cap(loader(options), options.get("train_size"), options.get("test_size"))
    if data.x_val is not None:
        return data
    return split_validation(data, options.get("val_fraction", VAL_FRACTION))


def split_validation(data: Dataset, fraction: float) -> Dataset:
    """Hold out `fraction` of the training split for validation: seeded (VAL_SEED), stratified
    by label where every class has at least two examples; 0 leaves no validation split."""
    from sklearn.model_selection import train_test_split

    if fraction == 0:
        return data
    n_val = max(1, round(fraction * len(data.x_train)))
    y = data.y_train
    counts = np.unique(y, return_counts=True)[1] if y is not None else np.array([])
    stratify = y if len(counts) and counts.min() >= 2 and n_val >= len(counts) else None
    index = np.arange(len(data.x_train))
    train, val = train_test_split(index, test_size=n_val, random_state=VAL_SEED, stratify=stratify)
    train, val = np.sort(train), np.sort(val)
    pick = lambda a, i: None if a is None else a[i]  # noqa: E731
    return replace(data, x_train=data.x_train[train], y_train=pick(y, train),
                   x_val=data.x_train[val], y_val=pick(y, val))


def _cap(data: Dataset, train_size: int | None, test_size: int | None) -> Dataset:
    """Keep a fixed, seeded random subset of each split (for quick studies and tests)."""
    def take(x, y, n, seed):
        if n is None or n >= len(x):
            return x, y
        idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
        return x[idx], (None if y is None else y[idx])

    x_tr, y_tr = take(data.x_train, data.y_train, train_size, 1)
    x_te, y_te = take(data.x_test, data.y_test, test_size, 2)
    return replace(data, x_train=x_tr, x_test=x_te, y_train=y_tr, y_test=y_te)


def _digits(options: dict[str, Any]) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    fraction = options.get("test_fraction", 0.2)
    if not 0.0 < fraction < 1.0:
        raise UserError(f"dataset.test_fraction must be between 0 and 1, got {fraction}.")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixel values 0..16 → [0, 1]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, digits.target, test_size=fraction, stratify=digits.target, random_state=0)
    return Dataset("digits", x_tr, x_te, y_tr.astype(np.int64), y_te.astype(np.int64), (8, 8))


# The four standard files of every MNIST-format dataset, and where each dataset publishes them.
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IDX_SOURCES: dict[str, tuple[str, tuple[str, str, str, str]]] = {
    # name: (base URL, md5 of each file in IDX_FILES order) — the checksums torchvision publishes.
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
               "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                       "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
    "kmnist": ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
               ("bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134")),
}


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file into a numpy array of its stored dtype."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number).")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise UserError(f"{path} has an unknown IDX data type 0x{code:02x}.")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: header says {dims}, found {data.size} values.")
    return data.reshape(dims)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _download_idx(name: str, root: Path, missing: list[str]) -> None:
    """Fetch the missing files with a checksum check; on any failure leave nothing behind."""
    base, sums = IDX_SOURCES[name]
    md5 = dict(zip(IDX_FILES, sums))
    tmp = Path(tempfile.mkdtemp(prefix=f"ablate-{name}-"))
    try:
        for fname in missing:
            with urllib.request.urlopen(base + fname, timeout=20) as resp, \
                    open(tmp / fname, "wb") as out:
                shutil.copyfileobj(resp, out)
            if _md5(tmp / fname) != md5[fname]:
                raise OSError(f"checksum mismatch for {fname}")
        root.mkdir(parents=True, exist_ok=True)
        for fname in missing:
            shutil.move(str(tmp / fname), root / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _idx_loader(name: str) -> Callable[[dict[str, Any]], Dataset]:
    def load(options: dict[str, Any]) -> Dataset:
        if "root" not in options:
            raise UserError(f"dataset.root is required for {name}: the folder holding "
                            f"{', '.join(IDX_FILES)}.")
        root = Path(os.path.expanduser(options["root"]))
        missing = [f for f in IDX_FILES if not (root / f).is_file()]
        if missing and options.get("download", True):
            try:
                _download_idx(name, root, missing)
            except OSError as exc:
                raise UserError(
                    f"dataset.root: {root} lacks {', '.join(missing)} and the download failed "
                    f"({exc}). Put the four files {', '.join(IDX_FILES)} in {root} "
                    "(or point dataset.root at the folder that has them).") from None
            missing = []
        if missing:
            where = "does not exist" if not root.is_dir() else f"lacks {', '.join(missing)}"
            raise UserError(f"dataset.root: {root} {where}. Put the four files "
                            f"{', '.join(IDX_FILES)} there, or set download: true.")
        arrays = [read_idx(root / f) for f in IDX_FILES]
        x_tr, y_tr, x_te, y_te = arrays
        if x_tr.ndim != 3 or x_te.ndim != 3 or x_tr.shape[1:] != x_te.shape[1:]:
            raise UserError(f"dataset.root: the image files in {root} are not two sets of "
                            "equally sized images.")
        if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
            raise UserError(f"dataset.root: image and label counts differ in {root}.")
        shape = (int(x_tr.shape[1]), int(x_tr.shape[2]))
        scale = lambda a: (a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
        return Dataset(name, scale(x_tr), scale(x_te), y_tr.astype(np.int64),
                       y_te.astype(np.int64), shape)
    return load


def _npz(options: dict[str, Any]) -> Dataset:
    if "path" not in options:
        raise UserError("dataset.path is required for npz: a .npz file with arrays x_train and "
                        "x_test (and optionally y_train, y_test, x_val, y_val).")
    path = Path(os.path.expanduser(options["path"]))
    if not path.is_file():
        raise UserError(f"dataset.path: {path} does not exist.")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for key in ("x_train", "x_test"):
        if key not in arrays:
            raise UserError(f"dataset.path: {path} has no array '{key}' "
                            f"(it has {', '.join(sorted(arrays)) or 'none'}).")
    shape = tuple(int(s) for s in arrays["x_train"].shape[1:3]) if arrays["x_train"].ndim == 3 else None
    xs = {k: arrays[k].reshape(len(arrays[k]), -1).astype(np.float32)
          for k in ("x_train", "x_val", "x_test") if k in arrays}
    if len({x.shape[1] for x in xs.values()}) > 1:
        raise UserError(f"dataset.path: {', '.join(xs)} in {path} have different widths.")
    lo, hi = min(x.min() for x in xs.values()), max(x.max() for x in xs.values())
    if lo < 0.0 or hi > 1.0:
        raise UserError(f"dataset.path: values in {path} span [{lo:g}, {hi:g}]; scale them to "
                        "[0, 1] first.")
    labels = all(k in arrays for k in ("y_train", "y_test")) and ("x_val" not in xs or "y_val" in arrays)
    y = {k: arrays[k].astype(np.int64) if labels and k in arrays else None for k in ("y_train", "y_val", "y_test")}
    return Dataset("npz", xs["x_train"], xs["x_test"], y["y_train"], y["y_test"], shape,
                   xs.get("x_val"), y["y_val"])


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
    return Dataset("synthetic", x_tr, x_te, y_tr, y_te, (side, side) if side * side == dim else None)


DATASETS.register("digits", _digits)
for _name in ("mnist", "fashion_mnist", "kmnist"):
    DATASETS.register(_name, _idx_loader(_name))
DATASETS.register("npz", _npz)
DATASETS.register("synthetic", _synthetic)
