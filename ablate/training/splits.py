"""A dataset's splits on the training device.

Owns: `DeviceData` — the train, validation and test rows as tensors where the fleet trains (the
whole set lives there, so minibatches are gathered by index without copies), the labels, the
image shape, the ground-truth factors of the validation and test rows (disentanglement), the
dataset's classifier and its features of the real test and validation images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ablate.data.dataset import Dataset
from ablate.training import quality
from ablate.training.classifier import Judge


@dataclass
class DeviceData:
    """A dataset's splits as tensors on the training device (the whole set lives there)."""

    x_train: Tensor
    x_test: Tensor
    y_train: np.ndarray | None
    y_test: np.ndarray | None
    x_val: Tensor | None = None
    """None: the study has no validation split (then epochs record training numbers only)."""
    y_val: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    """One example's shape: (C, H, W) for images; None: flat rows of x_train.shape[1] values."""
    judge: Judge | None = None
    """The dataset's classifier (sample quality); None without labels."""
    real: dict[str, np.ndarray] = field(default_factory=dict)
    """The judge's features of the first QUALITY_SAMPLES images of test (and val)."""
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    """Each split's ground-truth factors (n, F) — test, and val when there is one — on
    datasets that have them (sprites); empty otherwise."""
    dci_estimators: int | None = None
    """Boosting stages of DCI on these factors (the study's eval.dci_estimators)."""

    @classmethod
    def put(cls, data: Dataset, device: torch.device, judge: Judge | None = None,
            dci_estimators: int | None = None) -> "DeviceData":
        as_t = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        out = cls(as_t(data.x_train), as_t(data.x_test), data.y_train, data.y_test,
                  as_t(data.x_val), data.y_val, data.image_shape, judge, dci_estimators=dci_estimators)
        out.factors = {split: f for split, f in (("test", data.f_test), ("val", data.f_val))
                       if f is not None}
        if judge is not None:
            out.real = {split: judge.features(x[:quality.QUALITY_SAMPLES])
                        for split, x in (("test", out.x_test), ("val", out.x_val)) if x is not None}
        return out
