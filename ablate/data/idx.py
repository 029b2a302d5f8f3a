"""MNIST-format datasets (MNIST, Fashion-MNIST, KMNIST): four IDX files, gzipped or not.

Owns: reading an IDX file (type codes, header, size checked against its bytes), the files each
dataset publishes and their checksums, a download that leaves nothing behind on failure, and
the loaders and their options (`FORMATS`).
"""

from __future__ import annotations

import gzip
import math
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ablate.data.dataset import Dataset, check_labels, fetch, root_folder
from ablate.errors import UserError

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


def _download_idx(name: str, root: Path, missing: list[str]) -> None:
    """Fetch the missing files with a checksum check; on any failure leave nothing behind."""
    base, sums = IDX_SOURCES[name]
    md5 = dict(zip(IDX_FILES, sums))
    tmp = Path(tempfile.mkdtemp(prefix=f"ablate-{name}-"))
    try:
        for fname in missing:
            fetch(base + fname, md5[fname], tmp)
        root.mkdir(parents=True, exist_ok=True)
        for fname in missing:
            shutil.move(str(tmp / fname), root / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _idx_loader(name: str) -> Callable[[dict[str, Any]], Dataset]:
    def load(options: dict[str, Any]) -> Dataset:
        root = root_folder(options, name, ", ".join(IDX_FILES))
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
        splits.append((x, check_labels(read_idx(root / labels), len(x), f"dataset.root: {root / labels}")))
    (x_tr, y_tr), (x_te, y_te) = splits
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise UserError(f"dataset.root: the images in {root / IDX_FILES[0]} are {x_tr.shape[1:]}, those "
                        f"in {root / IDX_FILES[2]} {x_te.shape[1:]}; both splits need one image size.")
    scale = lambda a: (a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    return Dataset(name, scale(x_tr), scale(x_te), y_tr, y_te, (1, *map(int, x_tr.shape[1:])))


FORMATS = {name: (_idx_loader(name), {"root": str, "download": bool}) for name in IDX_SOURCES}
"""name → (loader, the options it accepts besides datasets.COMMON_OPTIONS)."""
