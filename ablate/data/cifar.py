"""CIFAR-10's python version: five pickled training batches and a test batch.

Owns: the restricted unpickler (it admits only what a batch holds: a file never runs code), a
batch's checks, the download, and the loader and its options (`FORMATS`).
"""

from __future__ import annotations

import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ablate.data.dataset import Dataset, check_labels, fetch, root_folder
from ablate.errors import UserError

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
    return x.astype(np.float32) / 255.0, check_labels(y, len(x), f"dataset.root: {path}: b'labels'")


def _cifar10(options: dict[str, Any]) -> Dataset:
    root = root_folder(options, "cifar10", f"{CIFAR_DIR}/ with {', '.join(CIFAR_FILES)}")
    folder = root / CIFAR_DIR if not (root / CIFAR_FILES[0]).is_file() else root
    missing = [f for f in CIFAR_FILES if not (folder / f).is_file()]
    if missing and options.get("download", True):
        tmp = Path(tempfile.mkdtemp(prefix="ablate-cifar10-"))
        try:
            with tarfile.open(fetch(CIFAR_URL, CIFAR_MD5, tmp)) as tar:
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


FORMATS = {"cifar10": (_cifar10, {"root": str, "download": bool})}
"""name → (loader, the options it accepts besides datasets.COMMON_OPTIONS)."""
