"""One check shared by the fleet tests: a member's numbers alone and inside a cohort."""

from __future__ import annotations

import pytest

RTOL = 1e-4
"""As tests/unit/test_fleet.py: a wider, padded cohort may sum in another order (float32
rounding); over a few epochs of Adam that stays far below 1e-4 relative."""


def assert_same_numbers(alone, crowd, metrics) -> None:
    """Two Outcomes of one member: both finished, every metric and per-epoch loss equal."""
    assert alone.status == crowd.status == "ok"
    for m in metrics:
        assert crowd.metrics[m] == pytest.approx(alone.metrics[m], rel=RTOL, abs=1e-6), m
    for ra, rc in zip(alone.history, crowd.history):
        assert rc["train_loss"] == pytest.approx(ra["train_loss"], rel=RTOL)
