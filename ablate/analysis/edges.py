"""Edge-of-range warnings: whether the best value a search or a tuning search found lies at an
edge of its range, where the optimum may lie beyond it, and the sentence that says so.

Owns: EDGE and the two functions. Does not own: the searches (sources.py) or the sections
that warn (search.py, protocol.py), which both read it here so that neither imports the other.
"""

from __future__ import annotations

import math

from ablate.analysis.document import param
from ablate.study.schema import Range

EDGE = 0.05
"""A best value this close to an edge of its range (as a share of the range, on a log scale for
a log range) may lie outside it."""


def edge_hits(best: dict, ranges: dict[str, Range]) -> list[tuple[str, str, Range]]:
    """(key, "low" or "high", its range) for each range whose best value lies at or within
    EDGE of an edge: the optimum may lie outside the range."""
    hits = []
    for key, r in ranges.items():
        if best.get(key) is None:
            continue
        scale = math.log if r.log else (lambda v: v)
        share = (scale(best[key]) - scale(r.low)) / (scale(r.high) - scale(r.low))
        if share <= EDGE or share >= 1 - EDGE:
            hits.append((key, "low" if share <= EDGE else "high", r))
    return hits


def edge_sentence(key: str, side: str, r: Range, who: str) -> str:
    """Says that `who`'s best `key` lies at the `side` edge of its range, and what to do."""
    edge = r.low if side == "low" else r.high
    return (f"The best {key} of {who} lies at the {side} edge of its range [{param(r.low)}, "
            f"{param(r.high)}]; the optimum may lie beyond {param(edge)}: widen the range to find out.")
