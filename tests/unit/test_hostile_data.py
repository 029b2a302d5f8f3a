"""Hostile data inputs: every malformed file a loader can meet ends in one `UserError` line that
names the file (or the dataset key) and the fix, and a pickle's payload never runs."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from ablate.data.cifar import CIFAR_DIR, CIFAR_FILES
from ablate.data.datasets import load_dataset
from ablate.data.idx import IDX_FILES
from ablate.errors import UserError

RNG_SEED = 0


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _idx_root(tmp: Path, name: str, raw: bytes, *, gzipped: bool = True) -> tuple[dict, Path]:
    """Four good IDX files in `tmp`, then `name` replaced by `raw` (gzipped unless told)."""
    rng = np.random.default_rng(RNG_SEED)
    arrays = [rng.integers(0, 256, (20, 4, 3)), rng.integers(0, 10, 20),
              rng.integers(0, 256, (6, 4, 3)), rng.integers(0, 10, 6)]
    for fname, a in zip(IDX_FILES, arrays):
        (tmp / fname).write_bytes(gzip.compress(_idx_bytes(a)))
    (tmp / name).write_bytes(gzip.compress(raw) if gzipped else raw)
    return {"name": "mnist", "root": str(tmp), "download": False}, tmp / name


def _batch(n: int = 2) -> dict:
    rng = np.random.default_rng(RNG_SEED)
    return {b"batch_label": b"x", b"labels": list(range(n)),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"f"] * n}


def _cifar_root(tmp: Path, raw: bytes) -> tuple[dict, Path]:
    """Six good CIFAR-10 batches in `tmp`, then data_batch_1 replaced by `raw`."""
    folder = tmp / CIFAR_DIR
    folder.mkdir()
    for fname in CIFAR_FILES:
        (folder / fname).write_bytes(pickle.dumps(_batch()))
    (folder / CIFAR_FILES[0]).write_bytes(raw)
    return {"name": "cifar10", "root": str(tmp), "download": False}, folder / CIFAR_FILES[0]


def _npz(tmp: Path, **arrays: Any) -> tuple[dict, Path]:
    """An npz of good arrays in `tmp`, with `arrays` replacing or adding to them."""
    rng = np.random.default_rng(RNG_SEED)
    good = {"x_train": rng.random((5, 4)), "x_test": rng.random((3, 4)),
            "y_train": np.arange(5) % 2, "y_test": np.arange(3) % 2}
    path = tmp / "d.npz"
    np.savez(path, **{**good, **arrays})
    return {"name": "npz", "path": str(path)}, path


def _npz_file(tmp: Path, raw: bytes) -> tuple[dict, Path]:
    path = tmp / "d.npz"
    path.write_bytes(raw)
    return {"name": "npz", "path": str(path)}, path


def _npy_as_npz(tmp: Path) -> tuple[dict, Path]:
    np.save(tmp / "d.npy", np.ones((5, 4)))
    return _npz_file(tmp, (tmp / "d.npy").read_bytes())


def _truncated_npz(tmp: Path) -> tuple[dict, Path]:
    _, path = _npz(tmp)
    return _npz_file(tmp, path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_npz(tmp: Path) -> tuple[dict, Path]:
    _, path = _npz(tmp)
    raw = bytearray(path.read_bytes())
    raw[200:208] = b"\xff" * 8  # inside x_train's values: its CRC no longer holds
    return _npz_file(tmp, bytes(raw))


def _zip_of_text(tmp: Path) -> tuple[dict, Path]:
    path = tmp / "d.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", "1,2,3\n4,5,6\n")
        z.writestr("x_test.npy", "1,2,3\n")
    return {"name": "npz", "path": str(path)}, path


def _celeba_root(tmp: Path, partition: bytes, first_image: bytes | None = None) -> dict:
    """A CelebA folder of three tiny images, one per split; the partition file and (when given)
    the first image's bytes as told."""
    from PIL import Image

    (tmp / "img_align_celeba").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp / "img_align_celeba" / f"{i}.png")
    if first_image is not None:
        (tmp / "img_align_celeba" / "0.png").write_bytes(first_image)
    (tmp / "list_eval_partition.txt").write_bytes(partition)
    return {"name": "celeba", "root": str(tmp)}


IMAGES = np.random.default_rng(RNG_SEED).integers(0, 256, (20, 4, 3), dtype=np.uint8)

# (what is wrong, tmp_path → (options, the file or key the message must name), message pattern)
CASES: list[tuple[str, Callable[[Path], tuple[dict, Any]], str]] = [
    # npz: shapes, dtypes, sizes, labels, and files that are not npz archives
    ("npz x_train with no rows", lambda t: _npz(t, x_train=np.ones((0, 4))),
     r"x_train has shape \(0, 4\), so no examples"),
    ("npz x_test of zero width", lambda t: _npz(t, x_test=np.ones((3, 0))),
     r"x_test has shape \(3, 0\), so no examples"),
    ("npz 0-d x_train", lambda t: _npz(t, x_train=np.float64(3.0)), r"x_train has shape \(\)"),
    ("npz string x_train", lambda t: _npz(t, x_train=np.array([["1", "2"]] * 5)),
     r"x_train holds values of type <U1, not numbers"),
    ("npz complex x_test", lambda t: _npz(t, x_test=np.ones((3, 4)) * 1j),
     r"x_test holds values of type complex128, not numbers"),
    ("npz object x_train", lambda t: _npz(t, x_train=np.array([[1, "a"]] * 5, dtype=object)),
     r"cannot read the npz archive .*Object arrays cannot be loaded"),
    ("a .npy file as the npz", _npy_as_npz, r"is a \.npy file \(one array\), not an npz archive; save"),
    ("a text file as the npz", lambda t: _npz_file(t, b"x_train,x_test\n1,2\n"),
     r"is not a zip archive .*not an npz archive; save"),
    ("a truncated npz", _truncated_npz, r"not a zip archive \(a text or truncated file\?\)"),
    ("an npz with a damaged member", _corrupt_npz, r"cannot read the npz archive .*Bad CRC-32"),
    ("a zip of text files as the npz", _zip_of_text, r"holds 'x_train', which is not a numpy array"),
    ("npz y_train of the wrong length", lambda t: _npz(t, y_train=np.arange(4)),
     r"y_train holds labels of type int64 and shape \(4,\), but its 5 examples need one"),
    ("npz y_train holding NaN", lambda t: _npz(t, y_train=np.array([0, 1, np.nan, 1, 0])),
     r"y_train holds 1 labels that are not whole numbers ≥ 0, the first nan at row 2"),
    ("npz negative y_test", lambda t: _npz(t, y_test=np.array([0, -1, 1])),
     r"y_test holds 1 labels that are not whole numbers ≥ 0, the first -1 at row 1"),
    ("npz y_val without rows to match", lambda t: _npz(t, x_val=np.ones((2, 4)), y_val=np.arange(3)),
     r"y_val holds labels of type int64 and shape \(3,\), but its 2 examples"),
    ("npz of one training row", lambda t: _npz(t, x_train=np.ones((1, 4)), y_train=np.zeros(1)),
     r"the training split holds 1 row\(s\), too few to hold out a validation split"),
    # digits: sizes too small for the splits
    ("digits with train_size 1", lambda t: ({"name": "digits", "train_size": 1}, "dataset digits"),
     r"training split holds 1 row\(s\), too few .* give it more rows \(train_size\)"),
    ("digits with a tiny test_fraction", lambda t: ({"name": "digits", "test_fraction": 0.001},
                                                    "dataset.test_fraction"),
     r"test_fraction 0\.001 leaves 2 of the 1797 digits .* between 0\.01 and 0\.99"),
    # IDX (MNIST-format) files
    ("IDX not gzip though named .gz", lambda t: _idx_root(t, IDX_FILES[0], _idx_bytes(IMAGES), gzipped=False),
     r"cannot read .*Not a gzipped file"),
    ("IDX gzip stream cut short",
     lambda t: _idx_root(t, IDX_FILES[0], gzip.compress(_idx_bytes(IMAGES))[:60], gzipped=False),
     r"cannot read .*Compressed file ended"),
    ("IDX truncated values", lambda t: _idx_root(t, IDX_FILES[0], _idx_bytes(IMAGES)[:-7]),
     r"is truncated or its header is wrong: the header says \(20, 4, 3\) values of 1 byte\(s\), but 233"),
    ("IDX header at odds with its bytes",
     lambda t: _idx_root(t, IDX_FILES[2], _idx_bytes(IMAGES)[:4] + struct.pack(">3I", 6, 4, 4)
                         + IMAGES[:6].tobytes()),
     r"the header says \(6, 4, 4\) values of 1 byte\(s\), but 72 bytes follow"),
    ("IDX truncated inside its header", lambda t: _idx_root(t, IDX_FILES[0], _idx_bytes(IMAGES)[:9]),
     r"is truncated inside its header \(9 bytes, 3 dimensions\)"),
    ("IDX of text", lambda t: _idx_root(t, IDX_FILES[1], b"label,0\n"), r"is not an IDX file \(bad magic"),
    ("IDX with 19 labels for 20 images", lambda t: _idx_root(t, IDX_FILES[1], _idx_bytes(np.zeros(19))),
     r"holds labels of type uint8 and shape \(19,\), but its 20 examples"),
    ("IDX images of one dimension", lambda t: _idx_root(t, IDX_FILES[0], _idx_bytes(np.zeros(240))),
     r"holds an array of shape \(240,\), not N ≥ 1 images"),
    # CIFAR-10 python batches
    ("CIFAR batch of text", lambda t: _cifar_root(t, b"not a pickle\n"), r"is not a CIFAR-10 python batch"),
    ("CIFAR batch cut short", lambda t: _cifar_root(t, pickle.dumps(_batch())[:500]),
     r"is not a CIFAR-10 python batch \(.*\); replace it"),
    ("CIFAR batch without labels", lambda t: _cifar_root(t, pickle.dumps({b"data": _batch()[b"data"]})),
     r"no dict with b'data' and b'labels'"),
    ("CIFAR batch with str keys", lambda t: _cifar_root(t, pickle.dumps({"data": 1, "labels": []})),
     r"no dict with b'data' and b'labels'"),
    ("CIFAR images of the wrong width",
     lambda t: _cifar_root(t, pickle.dumps({**_batch(), b"data": np.zeros((2, 100), np.uint8)})),
     r"holds a uint8 array of shape \(2, 100\) as b'data'"),
    ("CIFAR images as a list", lambda t: _cifar_root(t, pickle.dumps({**_batch(), b"data": [[0] * 3072] * 2})),
     r"holds a list as b'data'"),
    ("CIFAR labels of the wrong length",
     lambda t: _cifar_root(t, pickle.dumps({**_batch(), b"labels": [1, 2, 3]})),
     r"b'labels' holds labels of type int64 and shape \(3,\), but its 2 examples"),
    ("CIFAR labels holding NaN", lambda t: _cifar_root(t, pickle.dumps({**_batch(), b"labels": [0.0, np.nan]})),
     r"b'labels' holds 1 labels that are not whole numbers"),
    # CelebA
    ("CelebA partition not text",
     lambda t: (_celeba_root(t, b"\xff\xfe\x00\x81 0\n"), t / "list_eval_partition.txt"),
     r"cannot read .*list_eval_partition\.txt .*replace it"),
    ("CelebA image of text",
     lambda t: (_celeba_root(t, b"0.png 0\n1.png 1\n2.png 2\n", b"hello"), t / "img_align_celeba" / "0.png"),
     r"cannot read the image .*0\.png .*replace it"),
]


@pytest.mark.parametrize("make, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_user_error_naming_the_file(tmp_path, make, pattern):
    options, named = make(tmp_path)
    with pytest.raises(UserError, match=pattern) as caught:
        load_dataset(options)
    message = str(caught.value)
    assert str(named) in message and "\n" not in message


class _Payload:
    """Unpickling it runs `call(arg)`: what a crafted batch would do."""

    def __init__(self, call: Callable, arg: str):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {"exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
            "os.system": _Payload(os.system, f"touch '{marker}'")}


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize("how", ["exec", "os.system"])
def test_a_cifar_batch_that_runs_code_is_refused_and_nothing_runs(tmp_path, how, protocol):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[how]
    options, path = _cifar_root(tmp_path, pickle.dumps({**_batch(), b"labels": payload}, protocol=protocol))
    with pytest.raises(UserError, match=r"is not a CIFAR-10 python batch \(it asks for \S*(exec|system), "
                                        "which a CIFAR-10 batch never holds; nothing in it was run") as caught:
        load_dataset(options)
    assert str(path) in str(caught.value) and not marker.exists()
    pickle.loads(path.read_bytes())  # the control: an unrestricted load does run it
    assert marker.exists()


def test_an_npz_object_array_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    options, path = _npz(tmp_path, x_train=np.array([_payloads(marker)["exec"]] * 5, dtype=object))
    with pytest.raises(UserError, match=r"cannot read the npz archive .*Object arrays cannot be loaded"):
        load_dataset(options)
    assert not marker.exists()
    np.load(path, allow_pickle=True)["x_train"]  # the control: a pickle load does run it
    assert marker.exists()
