"""Shared fixtures: tiny, seeded data and configs. Tests never draw random parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablate.data.datasets import load_dataset
from ablate.training.splits import DeviceData


@pytest.fixture(scope="session")
def tiny_data() -> DeviceData:
    """300 training and 80 test digits, on the CPU."""
    data = load_dataset({"name": "digits", "train_size": 300, "test_size": 80})
    return DeviceData.put(data, torch.device("cpu"))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    np.random.seed(0)
