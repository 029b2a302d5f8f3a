"""What a run records beside its trials: the activation cost measurement."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.errors import UserError
from ablate.run.machine import activation_cost


@pytest.fixture
def two_threads():
    """Torch on two threads while the test runs (the measurement's one differs from it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_activation_cost_reports_quartiles_per_activation_on_one_thread(two_threads):
    """Shape and order of the numbers only: a test never depends on timing."""
    names = ["relu", "identity", "swish", "rational"]  # no parameters, the input itself, learnable
    cost = activation_cost(names, torch.device("cpu"), elements=1 << 10, samples=3, calls=2, warmup=1)
    assert torch.get_num_threads() == 2
    assert list(cost) == names
    for name, c in cost.items():
        assert c.keys() == {"median", "q25", "q75", "samples", "elements", "threads"}, name
        assert all(math.isfinite(c[k]) and c[k] > 0 for k in ("median", "q25", "q75")), name
        assert c["q25"] <= c["median"] <= c["q75"], name
        assert (c["samples"], c["elements"], c["threads"]) == (3, 1 << 10, 1), name


def test_activation_cost_restores_the_threads_when_it_fails(two_threads):
    with pytest.raises(UserError):
        activation_cost(["relu", "no-such-activation"], torch.device("cpu"), elements=1 << 10)
    assert torch.get_num_threads() == 2
