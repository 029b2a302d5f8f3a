"""Dataset loaders: digits, IDX files the test writes itself, npz, CIFAR-10 batches of every pickle
protocol, synthetic, caps; legitimate inputs (Unicode paths, whole-float labels) keep loading."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from ablate.data.datasets import load_dataset
from ablate.data.idx import IDX_FILES, read_idx
from ablate.errors import UserError


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_root(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (20, 6, 5)), rng.integers(0, 10, 20),
              rng.integers(0, 256, (8, 6, 5)), rng.integers(0, 10, 8)]
    for name, a in zip(IDX_FILES, arrays):
        write_idx(tmp_path / name, a)
    return tmp_path, arrays


def test_digits_is_scaled_stratified_and_fixed():
    a = load_dataset({"name": "digits"})
    b = load_dataset({"name": "digits"})
    assert a.x_train.shape == (1293, 64) and a.x_val.shape == (144, 64) and a.x_test.shape == (360, 64)
    assert 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
    np.testing.assert_array_equal(a.x_test, b.x_test)
    counts = np.bincount(a.y_test)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    assert a.image_shape == (1, 8, 8)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_idx_loader_reads_the_standard_files(idx_root, name):
    root, arrays = idx_root
    data = load_dataset({"name": name, "root": str(root), "download": False})
    assert data.x_train.shape == (18, 30) and data.x_val.shape == (2, 30) and data.image_shape == (1, 6, 5)
    whole = load_dataset({"name": name, "root": str(root), "download": False, "val_fraction": 0})
    assert whole.x_val is None
    np.testing.assert_allclose(whole.x_train[3], arrays[0][3].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, arrays[3])


def test_read_idx_rejects_truncated(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 4)
    with pytest.raises(UserError, match="truncated"):
        read_idx(path)


def test_missing_idx_file_names_what_to_do(idx_root):
    root, _ = idx_root
    (root / IDX_FILES[2]).unlink()
    with pytest.raises(UserError, match=r"dataset\.root: .* lacks t10k-images-idx3-ubyte\.gz\. Put"):
        load_dataset({"name": "mnist", "root": str(root), "download": False})


def test_missing_idx_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset({"name": "kmnist", "root": str(tmp_path / "nope"), "download": False})


def test_npz_and_caps(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.random((50, 4, 4)), x_test=rng.random((10, 4, 4)),
             y_train=np.arange(50) % 3, y_test=np.arange(10) % 3)
    data = load_dataset({"name": "npz", "path": str(path), "train_size": 20})
    assert data.x_train.shape == (18, 16) and data.image_shape == (1, 4, 4) and len(data.y_train) == 18
    assert data.x_val.shape == (2, 16) and len(data.y_val) == 2
    np.savez(path, x_train=rng.random((5, 3)) * 2, x_test=rng.random((5, 3)))
    with pytest.raises(UserError, match=r"training split spans \[0\.\d+, 1\.\d+\], but a Bernoulli"):
        load_dataset({"name": "npz", "path": str(path)}, unit=True)
    assert load_dataset({"name": "npz", "path": str(path)}).x_train.max() > 1  # a Gaussian's data


def test_synthetic_is_seeded():
    a = load_dataset({"name": "synthetic", "n_train": 30, "dim": 16})
    b = load_dataset({"name": "synthetic", "n_train": 30, "dim": 16})
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape == (27, 16) and a.x_val.shape == (3, 16) and a.image_shape == (1, 4, 4)


def test_validation_split_is_fixed_stratified_and_disjoint():
    a = load_dataset({"name": "digits", "val_fraction": 0.2})
    b = load_dataset({"name": "digits", "val_fraction": 0.2})
    np.testing.assert_array_equal(a.x_val, b.x_val)
    whole = load_dataset({"name": "digits", "val_fraction": 0})
    assert whole.x_val is None and len(whole.x_train) == len(a.x_train) + len(a.x_val) == 1437
    # every validation image came out of the training split, none is still in it
    rows = {r.tobytes() for r in whole.x_train}
    assert {r.tobytes() for r in a.x_val} <= rows
    assert not {r.tobytes() for r in a.x_val} & {r.tobytes() for r in a.x_train}
    counts = np.bincount(a.y_val)
    assert counts.max() - counts.min() <= 1  # stratified: ~29 of each digit


def test_npz_brings_its_own_validation_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.random((40, 6)), x_val=rng.random((7, 6)), x_test=rng.random((9, 6)),
             y_train=np.arange(40) % 2, y_val=np.arange(7) % 2, y_test=np.arange(9) % 2)
    data = load_dataset({"name": "npz", "path": str(path)})
    assert len(data.x_train) == 40 and len(data.x_val) == 7 and list(data.y_val) == [0, 1, 0, 1, 0, 1, 0]
    np.savez(path, x_train=rng.random((40, 6)), x_val=rng.random((7, 5)), x_test=rng.random((9, 6)))
    with pytest.raises(UserError, match="different widths"):
        load_dataset({"name": "npz", "path": str(path)})


def test_npz_shape_names_the_channels(tmp_path):
    path = tmp_path / "c.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((30, 3 * 4 * 2)), x_test=rng.random((5, 24)))
    assert load_dataset({"name": "npz", "path": str(path), "shape": [3, 4, 2]}).image_shape == (3, 4, 2)
    assert load_dataset({"name": "npz", "path": str(path)}).image_shape is None
    with pytest.raises(UserError, match=r"dataset\.shape: \[3, 4, 4\] holds 48 values, but each image .* has 24"):
        load_dataset({"name": "npz", "path": str(path), "shape": [3, 4, 4]})


def _cifar_batch(path: Path, images: np.ndarray, labels: list[int], protocol: int | None = None) -> None:
    with open(path, "wb") as f:  # the format of CIFAR-10's python batches
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": images,
                     b"filenames": [b"f"] * len(labels)}, f, protocol=protocol)


def test_cifar10_reads_the_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [rng.integers(0, 256, (4, 3072), dtype=np.uint8) for _ in range(6)]
    for i, images in enumerate(batches[:5]):
        _cifar_batch(folder / f"data_batch_{i + 1}", images, [i, 9 - i, 1, 2])
    _cifar_batch(folder / "test_batch", batches[5], [3, 3, 3, 3])
    data = load_dataset({"name": "cifar10", "root": str(tmp_path), "download": False, "val_fraction": 0})
    assert data.x_train.shape == (20, 3072) and data.x_test.shape == (4, 3072)
    assert data.image_shape == (3, 32, 32) and list(data.y_test) == [3, 3, 3, 3]
    # rows keep CIFAR's channel-first layout: the red plane, then green, then blue
    np.testing.assert_allclose(data.x_train[5], batches[1][1] / 255.0, rtol=1e-6)
    assert list(data.y_train[:8]) == [0, 9, 1, 2, 1, 8, 1, 2]
    (folder / "test_batch").unlink()
    with pytest.raises(UserError, match=r"dataset\.root: .*cifar-10-batches-py lacks test_batch\. Unpack"):
        load_dataset({"name": "cifar10", "root": str(tmp_path), "download": False})


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL, "numpy 1"])
def test_cifar10_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    """The restricted unpickler admits each way a batch pickles; "numpy 1": protocol 2 naming
    numpy.core.multiarray, as CIFAR-10's own files (written by Python 2 and NumPy 1) do."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _cifar_batch(folder / name, images, [0, 7, 2], 2 if protocol == "numpy 1" else protocol)
        if protocol == "numpy 1":
            raw = (folder / name).read_bytes().replace(b"numpy._core.", b"numpy.core.")
            assert b"cnumpy.core.multiarray\n_reconstruct" in raw
            (folder / name).write_bytes(raw)
    data = load_dataset({"name": "cifar10", "root": str(tmp_path), "download": False, "val_fraction": 0})
    assert data.x_train.shape == (15, 3072) and list(data.y_test) == [0, 7, 2]
    np.testing.assert_allclose(data.x_test, images / 255.0, rtol=1e-6)


def test_legitimate_inputs_still_load(tmp_path):
    """A Unicode path, labels stored as whole floats, and a validation split too big to stratify."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "données_日本"
    folder.mkdir()
    path = folder / "jeu_ü.npz"
    np.savez(path, x_train=rng.random((20, 3)), x_test=rng.random((4, 3)),
             y_train=(np.arange(20) % 10).astype(np.float32), y_test=np.array([0.0, 1.0, 2.0, 3.0]))
    data = load_dataset({"name": "npz", "path": str(path), "val_fraction": 0.9})
    assert (len(data.x_train), len(data.x_val)) == (2, 18)  # 10 classes cannot fit both sides
    assert data.y_test.dtype == np.int64 and list(data.y_test) == [0, 1, 2, 3]
    for name, a in zip(IDX_FILES, [rng.integers(0, 256, (4, 2, 2)), np.arange(4),
                                   rng.integers(0, 256, (2, 2, 2)), np.arange(2)]):
        write_idx(folder / name, a)
    assert load_dataset({"name": "mnist", "root": str(folder), "download": False}).x_val.shape == (1, 4)


def test_celeba_crops_the_centre_resizes_and_keeps_its_partition(tmp_path):
    from PIL import Image

    images = tmp_path / "img_align_celeba"
    images.mkdir()
    lines = []
    for i in range(9):  # CelebA's aligned size: 178 wide, 218 high; white inside the centre crop
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[35:183, 15:163] = (255, 128 + i, 0)
        Image.fromarray(pixels).save(images / f"{i:06d}.png")
        lines.append(f"{i:06d}.png {0 if i < 5 else 1 if i < 7 else 2}")
    (tmp_path / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset({"name": "celeba", "root": str(tmp_path)})
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (5, 2, 2)
    assert data.image_shape == (3, 64, 64) and data.y_train is None
    red, green, blue = data.x_train[0].reshape(3, 64, 64)
    assert red.min() == 1.0 and blue.max() == 0.0  # nothing of the black border survives
    assert green.mean() == pytest.approx(128 / 255, abs=1e-6)
    capped = load_dataset({"name": "celeba", "root": str(tmp_path), "train_size": 2})
    assert len(capped.x_train) == 2 and len(capped.x_val) == 1
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError, match=r"list_eval_partition\.txt does not exist\. Put CelebA's aligned"):
        load_dataset({"name": "celeba", "root": str(tmp_path)})
