"""The one way tests build a runs table (runs.csv's shape) by hand."""

from __future__ import annotations

import itertools
from typing import Callable, Iterable

import pandas as pd


def runs_table(axes: dict[str, Iterable], fill: Callable[[dict], dict],
               extra: Iterable[dict] = ()) -> pd.DataFrame:
    """One finished member per combination of `axes` (in the order given, the last varying
    fastest), with the columns `fill(row)` returns (called in that order, so a seeded RNG
    inside it draws reproducibly); then the `extra` rows (e.g. a failed member)."""
    rows = []
    for combo in itertools.product(*axes.values()):
        row = {**dict(zip(axes, combo)), "status": "ok"}
        rows.append({**row, **fill(row)})
    return pd.DataFrame([*rows, *extra])
