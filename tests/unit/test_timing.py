"""The phase clock (timing.py): accounts add up, parts sit under their phase, and the
breakdown lists phases in run order with what no phase holds as 'other'."""

from __future__ import annotations

import pytest

from ablate import timing


def test_phases_add_up_and_an_account_is_taken_once():
    timing.taken()
    for _ in range(2):
        with timing.phase("evaluation"), timing.phase("evaluation/IWAE NLL"):
            pass
    account = timing.taken()
    assert set(account) == {"evaluation", "evaluation/IWAE NLL"}
    assert account["evaluation"] >= account["evaluation/IWAE NLL"] >= 0.0
    assert timing.taken() == {}


def test_a_phase_that_raises_is_still_counted():
    timing.taken()
    with pytest.raises(ValueError), timing.phase("setup"):
        raise ValueError
    assert "setup" in timing.taken()


def test_the_breakdown_lists_phases_in_run_order_with_their_parts_and_the_rest():
    account = {"report": 2.0, "training": 10.0, "evaluation/IWAE NLL": 3.0, "evaluation": 5.0, "setup": 1.0}
    rows = timing.breakdown(account, wall=20.0)
    assert [r[0] for r in rows] == ["setup", "training", "evaluation", "  IWAE NLL", "report", "other"]
    assert rows[-1][1] == pytest.approx(2.0) and rows[1][2] == pytest.approx(0.5)
    assert timing.added({"training": 1.0}, {"training": 2.0, "store": 1.0}) == {"training": 3.0, "store": 1.0}
