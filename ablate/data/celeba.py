"""CelebA's aligned images, as the common VAE baselines use them.

Owns: the images' crop and resize, the authors' partition file, and the loader and its options
(`FORMATS`); only the images a study keeps are decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ablate.data.dataset import Dataset, keep, root_folder
from ablate.errors import UserError
from ablate.streams import CAP_SEEDS

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
    root = root_folder(options, "celeba", f"{CELEBA_IMAGES}/ and {CELEBA_PARTITION}")
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


FORMATS = {"celeba": (_celeba, {"root": str})}
"""name → (loader, the options it accepts besides datasets.COMMON_OPTIONS)."""
