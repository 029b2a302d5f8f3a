"""Datasets: the bundled digits, MNIST-format IDX files, CIFAR-10's python pickles, CelebA's
aligned images, a user's npz arrays, synthetic data.

Owns: reading, scaling to [0, 1], each dataset's image shape (C, H, W), the fixed train /
validation / test splits, optional size caps, labels.
Does not own: batching (the fleet gathers batches by index on the device) or validation of
YAML keys (study.py checks them against `DATASET_OPTIONS`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tarfile
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
    image_shape: tuple[int, int, int] | None  # (C, H, W) when the rows are images
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
    return split_validation(data, options.get("val_fraction", VAL_FRACTION))


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


def keep(total: int, size: int | None, seed: int) -> np.ndarray:
    """The indices of a fixed, seeded random subset of `size` out of `total` (all when None)."""
    if size is None or size >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:size])


CAP_SEEDS = {"train": 1, "test": 2}
"""The seeds of the train_size and test_size subsets."""


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
        arrays = [read_idx(root / f) for f in IDX_FILES]
        x_tr, y_tr, x_te, y_te = arrays
        if x_tr.ndim != 3 or x_te.ndim != 3 or x_tr.shape[1:] != x_te.shape[1:]:
            raise UserError(f"dataset.root: the image files in {root} are not two sets of "
                            "equally sized images.")
        if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
            raise UserError(f"dataset.root: image and label counts differ in {root}.")
        shape = (1, int(x_tr.shape[1]), int(x_tr.shape[2]))
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
    xs = {k: arrays[k].reshape(len(arrays[k]), -1).astype(np.float32)
          for k in ("x_train", "x_val", "x_test") if k in arrays}
    if len({x.shape[1] for x in xs.values()}) > 1:
        raise UserError(f"dataset.path: {', '.join(xs)} in {path} have different widths.")
    shape = _npz_shape(options.get("shape"), arrays["x_train"], xs["x_train"].shape[1], path)
    labels = all(k in arrays for k in ("y_train", "y_test")) and ("x_val" not in xs or "y_val" in arrays)
    y = {k: arrays[k].astype(np.int64) if labels and k in arrays else None for k in ("y_train", "y_val", "y_test")}
    return Dataset("npz", xs["x_train"], xs["x_test"], y["y_train"], y["y_test"], shape,
                   xs.get("x_val"), y["y_val"])


# CIFAR-10's python version: five training batches and a test batch, each a pickled dict with
# b"data" (N, 3072) uint8 — the red, green and blue 32×32 planes of each image — and b"labels".
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch → (images (N, 3072) in [0, 1], labels (N,))."""
    import pickle

    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        x, y = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"dataset.root: {path} is not a CIFAR-10 python batch ({exc}).") from None
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
        raise UserError(f"dataset.root: {path} holds {x.shape} images and {len(y)} labels; a CIFAR-10 "
                        "batch holds N rows of 3072 values and N labels.")
    return x.astype(np.float32) / 255.0, y


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
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"dataset.root: cannot read the image {path} ({exc}).") from None
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
    splits: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for line in (root / CELEBA_PARTITION).read_text().split("\n"):
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
