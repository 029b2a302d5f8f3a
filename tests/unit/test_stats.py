"""Statistics on hand-made tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablate.stats import bootstrap_ci, ranking, summarize


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(10, 1, 5)
    large = rng.normal(10, 1, 200)
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < hi - lo
    assert lo2 < 10 < hi2


def test_bootstrap_edge_cases():
    assert math.isnan(bootstrap_ci([])[0])
    m, lo, hi = bootstrap_ci([3.0, float("nan")])
    assert m == 3.0 and math.isnan(lo)


def _table():
    rows = []
    for act, shift in (("good", 0.0), ("bad", 5.0)):
        for seed in range(4):
            for latent in (2, 8):
                rows.append({"activation": act, "seed": seed, "latent_dim": latent, "kl_weight": 1.0,
                             "status": "ok", "test_nll": 100 + shift + seed * 0.1 + latent})
    rows.append({"activation": "bad", "seed": 9, "latent_dim": 2, "kl_weight": 1.0,
                 "status": "failed", "test_nll": float("nan")})
    return pd.DataFrame(rows)


def test_summarize_counts_only_finished():
    s = summarize(_table(), "test_nll", ["activation"])
    assert dict(zip(s["activation"], s["n"])) == {"bad": 8, "good": 8}


def test_ranking_orders_and_counts_failures():
    r = ranking(_table(), "test_nll", ["latent_dim", "kl_weight"], maximize=False)
    assert list(r["activation"]) == ["good", "bad"]
    assert list(r["failed"]) == [0, 1]
    assert r.loc[0, "mean"] == pytest.approx(100 + 5 + 0.15)
