"""Datasets: the bundled digits, MNIST-format IDX files, CIFAR-10's python pickles, CelebA's
aligned images, a user's npz arrays, synthetic data.

Owns: reading, scaling to [0, 1], each dataset's image shape (C, H, W), the fixed train /
validation / test splits, optional size caps, labels; refusing a malformed file (wrong shape,
dtype, size or label count; a pickle that asks for anything but arrays) with one `UserError`
line naming the file and the fix, before anything is written and without running its contents.
Does not own: batching (the fleet gathers batches by index on the device) or validation of
YAML keys (study.py checks them against `DATASET_OPTIONS`).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ablate.errors import UserError
from ablate.registry import Registry
from ablate.streams import CAP_SEEDS, VAL_SEED


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

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])


VAL_FRACTION = 0.1
"""The share of the training split held out for validation unless `val_fraction` says otherwise."""

# Keys each dataset accepts besides `name` (study.py rejects others with a suggestion);
# "fraction" is a number in [0, 1), "shape" a list [C, H, W] of positive whole numbers.
COMMON_OPTIONS = {"train_size": int, "test_size": int, "val_fraction": "fraction"}
DATASET_OPTIONS: dict[str, dict[str, type | str]] = {
    "digits": {"test_fraction": float},
    "mnist": {"root": str, "download": bool},
    "fashion_mnist": {"root": str, "download": bool},
    "kmnist": {"root": str, "download": bool},
    "cifar10": {"root": str, "download": bool},
    "celeba": {"root": str},
    "npz": {"path": str, "shape": "shape"},
    "synthetic": {"n_train": int, "n_test": int, "dim": int, "classes": int, "seed": int},
}

DATASETS: Registry[Callable[[dict[str, Any]], Dataset]] = Registry("dataset")


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
    train, val = np.sort(train), np.sort(val)
    pick = lambda a, i: None if a is None else a[i]  # noqa: E731
    return replace(data, x_train=data.x_train[train], y_train=pick(y, train),
                   x_val=data.x_train[val], y_val=pick(y, val))


def _val_size(n_train: int, fraction: float) -> int:
    """How many of `n_train` training rows the validation split takes: at least one."""
    return max(1, round(fraction * n_train))


def keep(total: int, size: int | None, seed: int) -> np.ndarray:
    """The indices of a fixed, seeded random subset of `size` out of `total` (all when None)."""
    if size is None or size >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:size])




def _cap(data: Dataset, train_size: int | None, test_size: int | None) -> Dataset:
    """Keep a fixed, seeded random subset of each split (for quick studies and tests)."""
    def take(x, y, n, seed):
        idx = keep(len(x), n, seed)
        return x[idx], (None if y is None else y[idx])

    x_tr, y_tr = take(data.x_train, data.y_train, train_size, CAP_SEEDS["train"])
    x_te, y_te = take(data.x_test, data.y_test, test_size, CAP_SEEDS["test"])
    return replace(data, x_train=x_tr, x_test=x_te, y_train=y_tr, y_test=y_te)


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


IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
"""IDX type codes → numpy dtypes (big-endian, as the format stores them)."""


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file into a numpy array of its stored dtype; a file that
    is not one (not gzip though named .gz, truncated, a header at odds with its bytes) is refused."""
    fix = "replace it with the original file"
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"dataset.root: cannot read {path} ({exc}); {fix}.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"dataset.root: {path} is not an IDX file (bad magic number); {fix}.")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise UserError(f"dataset.root: {path} has an unknown IDX data type 0x{code:02x}; {fix}.")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise UserError(f"dataset.root: {path} is truncated inside its header ({len(raw)} bytes, "
                        f"{ndim} dimensions); {fix}.")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(IDX_DTYPES[code])
    if len(raw) - start != math.prod(dims) * dtype.itemsize:
        raise UserError(f"dataset.root: {path} is truncated or its header is wrong: the header says "
                        f"{dims} values of {dtype.itemsize} byte(s), but {len(raw) - start} bytes "
                        f"follow it; {fix}.")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fetch(url: str, md5: str, into: Path) -> Path:
    """Download `url` into the folder `into` and check its MD5; raises OSError on a failure."""
    path = into / url.rpartition("/")[2]
    with urllib.request.urlopen(url, timeout=20) as resp, open(path, "wb") as out:
        shutil.copyfileobj(resp, out)
    if _md5(path) != md5:
        raise OSError(f"checksum mismatch for {path.name}")
    return path


def _download_idx(name: str, root: Path, missing: list[str]) -> None:
    """Fetch the missing files with a checksum check; on any failure leave nothing behind."""
    base, sums = IDX_SOURCES[name]
    md5 = dict(zip(IDX_FILES, sums))
    tmp = Path(tempfile.mkdtemp(prefix=f"ablate-{name}-"))
    try:
        for fname in missing:
            _fetch(base + fname, md5[fname], tmp)
        root.mkdir(parents=True, exist_ok=True)
        for fname in missing:
            shutil.move(str(tmp / fname), root / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _idx_loader(name: str) -> Callable[[dict[str, Any]], Dataset]:
    def load(options: dict[str, Any]) -> Dataset:
        root = _root(options, name, ", ".join(IDX_FILES))
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
        return _idx_dataset(name, root)
    return load


def _idx_dataset(name: str, root: Path) -> Dataset:
    """The four IDX files in `root`, each checked: (N, H, W) images, one label per image."""
    splits = []
    for images, labels in (IDX_FILES[:2], IDX_FILES[2:]):
        x = read_idx(root / images)
        if x.ndim != 3 or 0 in x.shape:
            raise UserError(f"dataset.root: {root / images} holds an array of shape {x.shape}, not "
                            "N ≥ 1 images of H × W pixels (N, H, W); replace it with the original file.")
        splits.append((x, _labels(read_idx(root / labels), len(x), f"dataset.root: {root / labels}")))
    (x_tr, y_tr), (x_te, y_te) = splits
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise UserError(f"dataset.root: the images in {root / IDX_FILES[0]} are {x_tr.shape[1:]}, those "
                        f"in {root / IDX_FILES[2]} {x_te.shape[1:]}; both splits need one image size.")
    scale = lambda a: (a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    return Dataset(name, scale(x_tr), scale(x_te), y_tr, y_te, (1, *map(int, x_tr.shape[1:])))


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
    xs = {k: _rows(arrays[k], f"dataset.path: {path}: {k}")
          for k in ("x_train", "x_val", "x_test") if k in arrays}
    if len({x.shape[1] for x in xs.values()}) > 1:
        raise UserError(f"dataset.path: {', '.join(xs)} in {path} have different widths.")
    shape = _npz_shape(options.get("shape"), arrays["x_train"], xs["x_train"].shape[1], path)
    labels = all(k in arrays for k in ("y_train", "y_test")) and ("x_val" not in xs or "y_val" in arrays)
    y = {k: _labels(arrays[k], len(xs["x" + k[1:]]), f"dataset.path: {path}: {k}")
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


def _rows(x: np.ndarray, where: str) -> np.ndarray:
    """An array of examples, one per row, → (N, D) float32; no rows, no values or no numbers is
    refused (`where` names the file and array)."""
    if x.dtype.kind not in "biuf":
        raise UserError(f"{where} holds values of type {x.dtype}, not numbers; store ints or floats.")
    if x.ndim == 0 or x.size == 0:
        raise UserError(f"{where} has shape {x.shape}, so no examples to train on; give N ≥ 1 "
                        "examples of at least one value each, one example per row.")
    return x.reshape(len(x), -1).astype(np.float32)


def _labels(y: np.ndarray, rows: int, where: str) -> np.ndarray:
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


# CIFAR-10's python version: five training batches and a test batch, each a pickled dict with
# b"data" (N, 3072) uint8 — the red, green and blue 32×32 planes of each image — and b"labels".
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


# What a CIFAR-10 batch's pickle may name: its uint8 array's class, dtype and the function that
# rebuilds it, under NumPy 1's and NumPy 2's module names (`_frombuffer`: pickle protocol 5).
CIFAR_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


def _latin1(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as pickle protocol 2 uses it for bytes (text, "latin1"), and nothing else."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"it asks for _codecs.encode with {encoding!r}")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR-10 batch holds (dicts, lists, bytes, numbers, uint8 arrays):
    any other global a pickle names (os.system, builtins.eval, …) is refused, never called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if (module, name) not in CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never "
                                         "holds; nothing in it was run")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch → (images (N, 3072) in [0, 1], labels (N,)), unpickled by
    `_CifarUnpickler`: a file that is not a batch is refused, and none of its contents run."""
    fix = f"replace it with the file from {CIFAR_URL}"
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise ValueError("it holds no dict with b'data' and b'labels'")
        x, y = batch[b"data"], np.asarray(batch[b"labels"])
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, IndexError, KeyError,
            TypeError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        raise UserError(f"dataset.root: {path} is not a CIFAR-10 python batch ({exc}); {fix}.") from None
    array = isinstance(x, np.ndarray)
    if not array or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1:] != (3072,) or not len(x):
        what = f"{x.dtype} array of shape {x.shape}" if array else type(x).__name__
        raise UserError(f"dataset.root: {path} holds a {what} as b'data'; a CIFAR-10 batch holds N ≥ 1 "
                        f"uint8 rows of 3072 values; {fix}.")
    return x.astype(np.float32) / 255.0, _labels(y, len(x), f"dataset.root: {path}: b'labels'")


def _cifar10(options: dict[str, Any]) -> Dataset:
    root = _root(options, "cifar10", f"{CIFAR_DIR}/ with {', '.join(CIFAR_FILES)}")
    folder = root / CIFAR_DIR if not (root / CIFAR_FILES[0]).is_file() else root
    missing = [f for f in CIFAR_FILES if not (folder / f).is_file()]
    if missing and options.get("download", True):
        tmp = Path(tempfile.mkdtemp(prefix="ablate-cifar10-"))
        try:
            with tarfile.open(_fetch(CIFAR_URL, CIFAR_MD5, tmp)) as tar:
                tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            root.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp / CIFAR_DIR), root / CIFAR_DIR)
        except (OSError, tarfile.TarError) as exc:
            raise UserError(f"dataset.root: {folder} lacks {', '.join(missing)} and the download "
                            f"failed ({exc}). Unpack {CIFAR_URL} into {root}.") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        folder, missing = root / CIFAR_DIR, []
    if missing:
        where = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise UserError(f"dataset.root: {folder} {where}. Unpack {CIFAR_URL} into {root}, or set "
                        "download: true.")
    train = [_cifar_batch(folder / f) for f in CIFAR_FILES[:-1]]
    x_te, y_te = _cifar_batch(folder / CIFAR_FILES[-1])
    return Dataset("cifar10", np.concatenate([x for x, _ in train]), x_te,
                   np.concatenate([y for _, y in train]), y_te, (3, 32, 32))


# CelebA, as the common VAE baselines use it: the aligned 178×218 images, centre-cropped to
# 148×148 and resized to 64×64, split by the authors' list_eval_partition.txt (0 train,
# 1 validation, 2 test). Its files come from a sharing service without a fixed address, so
# they are put in place by hand.
CELEBA_IMAGES, CELEBA_PARTITION = "img_align_celeba", "list_eval_partition.txt"
CELEBA_CROP, CELEBA_SIDE = 148, 64


def _celeba_image(path: Path) -> np.ndarray:
    """One image → (3·64·64,) in [0, 1]: centre crop, resize, channels first."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise UserError(f"dataset.root: cannot read the image {path} ({exc}); replace it with "
                        "CelebA's aligned image, or drop its line from the partition file.") from None
    w, h = rgb.size
    side = min(CELEBA_CROP, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side)).resize((CELEBA_SIDE, CELEBA_SIDE),
                                                                 Image.Resampling.BILINEAR)
    return (np.asarray(rgb, dtype=np.float32) / 255.0).transpose(2, 0, 1).reshape(-1)


def _celeba(options: dict[str, Any]) -> Dataset:
    root = _root(options, "celeba", f"{CELEBA_IMAGES}/ and {CELEBA_PARTITION}")
    for need in (CELEBA_IMAGES, CELEBA_PARTITION):
        if not (root / need).exists():
            raise UserError(f"dataset.root: {root / need} does not exist. Put CelebA's aligned images "
                            f"({CELEBA_IMAGES}/) and {CELEBA_PARTITION} from its authors' page in {root}.")
    try:
        partition = (root / CELEBA_PARTITION).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"dataset.root: cannot read {root / CELEBA_PARTITION} ({exc}); it is a text "
                        "file of lines '<image> <0|1|2>': replace it with the authors' file.") from None
    splits: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for line in partition.split("\n"):
        parts = line.split()
        if len(parts) == 2 and parts[1] in ("0", "1", "2"):
            splits[int(parts[1])].append(parts[0])
    train, val, test = splits[0], splits[1], splits[2]
    if not train or not test:
        raise UserError(f"dataset.root: {root / CELEBA_PARTITION} names no training or no test image.")
    kept = keep(len(train), options.get("train_size"), CAP_SEEDS["train"])
    # decode only what the study keeps; the validation split shrinks with the training split
    val_size = max(1, round(len(val) * len(kept) / len(train))) if val else 0
    load = lambda names, idx: np.stack([_celeba_image(root / CELEBA_IMAGES / names[i]) for i in idx])  # noqa: E731
    x_val = load(val, keep(len(val), val_size, CAP_SEEDS["train"])) if val else None
    x_te = load(test, keep(len(test), options.get("test_size"), CAP_SEEDS["test"]))
    return Dataset("celeba", load(train, kept), x_te, None, None, (3, CELEBA_SIDE, CELEBA_SIDE), x_val)


def _root(options: dict[str, Any], name: str, holds: str) -> Path:
    """The dataset's `root:` folder, required."""
    if "root" not in options:
        raise UserError(f"dataset.root is required for {name}: the folder holding {holds}.")
    return Path(os.path.expanduser(options["root"]))


def _npz_shape(given: list[int] | None, x: np.ndarray, width: int, path: Path) -> tuple | None:
    """An npz's image shape (C, H, W): `shape:` when given (it must hold each row's values),
    else (1, H, W) for arrays of 2-d images, else none."""
    if given is not None:
        if int(np.prod(given)) != width:
            raise UserError(f"dataset.shape: {list(given)} holds {int(np.prod(given))} values, but "
                            f"each image in {path} has {width}; give [C, H, W] with C·H·W = {width}.")
        return tuple(int(v) for v in given)
    return (1, int(x.shape[1]), int(x.shape[2])) if x.ndim == 3 else None


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


DATASETS.register("digits", _digits)
for _name in ("mnist", "fashion_mnist", "kmnist"):
    DATASETS.register(_name, _idx_loader(_name))
DATASETS.register("cifar10", _cifar10)
DATASETS.register("celeba", _celeba)
DATASETS.register("npz", _npz)
DATASETS.register("synthetic", _synthetic)
