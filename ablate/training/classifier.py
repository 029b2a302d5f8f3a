"""The feature space of sample quality: one small classifier per dataset, trained once, seeded,
and cached in the results folder.

Owns: the classifier (an MLP on the pixels, D → 256 → FEATURES → classes, ReLU), its training
(CLASSIFIER_SEED, Adam 1e-3, batch 128, CLASSIFIER_EPOCHS epochs on the training split), its
cache (`classifier.pt`: weights, test accuracy, and a fingerprint of the data it learned),
its features (the penultimate layer) and its predictions — the `Judge`. Does not own: the
metrics (quality.py) or when they are computed (samples.py).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.data.datasets import Dataset
from ablate.files import atomic_open
from ablate.streams import CLASSIFIER_SEED

CLASSIFIER_EPOCHS = 30
FEATURES = 64
CHUNK = 4096  # images per forward pass when featurising


def _net(dim: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, FEATURES), nn.ReLU(),
                         nn.Linear(FEATURES, classes))


@dataclass
class Judge:
    """A trained classifier: what sample quality is measured with."""

    net: nn.Sequential
    accuracy: float
    """On the test split."""
    classes: int

    @torch.no_grad()
    def features(self, x: Tensor) -> np.ndarray:
        """The penultimate layer's activations (n, FEATURES) of images x (n, D) in [0, 1]."""
        body = self.net[:-1]
        return torch.cat([body(x[s:s + CHUNK]) for s in range(0, len(x), CHUNK)]).double().cpu().numpy()

    @torch.no_grad()
    def predict(self, x: Tensor) -> np.ndarray:
        return torch.cat([self.net(x[s:s + CHUNK]).argmax(1) for s in range(0, len(x), CHUNK)]).cpu().numpy()


def _fingerprint(data: Dataset) -> str:
    """What the classifier learned from: the training images and labels, and the test split."""
    h = hashlib.sha256()
    for a in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _train(data: Dataset, device: torch.device) -> tuple[nn.Sequential, int]:
    gen = torch.Generator().manual_seed(CLASSIFIER_SEED)
    classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    torch.manual_seed(CLASSIFIER_SEED)  # nn.Linear's own init draws from the global generator
    net = _net(data.dim, classes).to(device)
    x = torch.as_tensor(data.x_train, dtype=torch.float32, device=device)
    y = torch.as_tensor(data.y_train, dtype=torch.long, device=device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(CLASSIFIER_EPOCHS):
        for idx in torch.randperm(len(x), generator=gen).to(device).split(128):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval(), classes


def judge_for(data: Dataset, path: Path, device: torch.device) -> Judge | None:
    """The dataset's classifier: loaded from `path` when it was trained on this data, else
    trained and saved there. None when the dataset has no labels."""
    if data.y_train is None or data.y_test is None:
        return None
    fingerprint = _fingerprint(data)
    if path.exists():
        saved = torch.load(path, map_location=device, weights_only=True)
        if saved.get("fingerprint") == fingerprint:
            net = _net(data.dim, saved["classes"]).to(device)
            net.load_state_dict(saved["state"])
            return Judge(net.eval(), saved["accuracy"], saved["classes"])
    net, classes = _train(data, device)
    judge = Judge(net, 0.0, classes)
    x_test = torch.as_tensor(data.x_test, dtype=torch.float32, device=device)
    judge.accuracy = float((judge.predict(x_test) == data.y_test).mean())
    buffer = io.BytesIO()
    torch.save({"state": net.state_dict(), "accuracy": judge.accuracy, "classes": classes,
                "fingerprint": fingerprint}, buffer)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getvalue())
    return judge
