"""Where a run's time goes: wall time by named phase, summed over the run. Torch-free.

Owns: the process's phase clock (`phase(name)`: a block's wall time added to `name`; a name
with a slash, `evaluation/iwae`, is a part of its parent phase), taking a run's account
(`taken`), adding accounts (runs, resumes and workers of one study), and the breakdown as
rows a person reads (`breakdown`). Does not own: what the phases are (the runner, the loop,
evaluation and the CLI name them) or where the account is kept (the store, the report).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

PHASES = ("setup", "training", "evaluation", "checkpoints", "store", "report")
"""The top-level phases, in the order a run goes through them and a breakdown lists them."""

MIN_SHOWN = 0.05
"""Seconds below which a part of a phase is left out of a breakdown (its phase still counts it)."""

_account: dict[str, float] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add this block's wall time to phase `name` (`parent/part` for a part of a phase)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _account[name] = _account.get(name, 0.0) + time.perf_counter() - start


def current() -> dict[str, float]:
    """This process's account so far."""
    return dict(_account)


def taken() -> dict[str, float]:
    """This process's account so far, and a fresh one from here on."""
    out = dict(_account)
    _account.clear()
    return out


def added(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Two accounts summed phase by phase."""
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in dict.fromkeys([*a, *b])}


def breakdown(account: dict[str, float], wall: float | None = None) -> list[tuple[str, float, float | None]]:
    """(phase, seconds, share of `wall`) for each top-level phase in run order, each followed by
    its parts of at least MIN_SHOWN seconds (named '  part'), and 'other' for the wall time no
    phase holds."""
    rows = []
    top = [p for p in PHASES if p in account] + sorted(k for k in account if "/" not in k and k not in PHASES)
    for name in top:
        rows.append((name, account[name], None))
        rows += [(f"  {k.partition('/')[2]}", v, None) for k, v in account.items()
                 if k.partition("/")[0] == name and "/" in k and v >= MIN_SHOWN]
    if wall is not None:
        rows.append(("other", max(0.0, wall - sum(account[p] for p in top)), None))
    total = wall if wall else sum(account[p] for p in top)
    return [(n, s, s / total if total else None) for n, s, _ in rows]
