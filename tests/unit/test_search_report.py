"""A search's and the tuning's report: the warning that a best value lies at a range's edge."""

from __future__ import annotations

from ablate.analysis.edges import edge_hits, edge_sentence
from ablate.study.schema import Range

LR = Range(1e-4, 1e-2, log=True)
LATENT = Range(2, 64, log=False, integer=True)


def test_a_best_value_within_five_percent_of_an_edge_is_flagged():
    # log range over two decades: 5% is a factor 10^0.1 ≈ 1.26 from either edge
    assert edge_hits({"lr": 0.0080}, {"lr": LR}) == [("lr", "high", LR)]
    assert edge_hits({"lr": 0.0079}, {"lr": LR}) == []
    assert edge_hits({"lr": 1.2e-4}, {"lr": LR}) == [("lr", "low", LR)]
    assert edge_hits({"lr": 1e-3}, {"lr": LR}) == []
    # linear range 2–64: 5% is 3.1 from either edge
    assert edge_hits({"latent_dim": 5}, {"latent_dim": LATENT}) == [("latent_dim", "low", LATENT)]
    assert edge_hits({"latent_dim": 6}, {"latent_dim": LATENT}) == []
    assert edge_hits({"latent_dim": 61}, {"latent_dim": LATENT}) == [("latent_dim", "high", LATENT)]


def test_the_sentence_says_which_edge_and_suggests_widening():
    text = edge_sentence("lr", "high", LR, "the search (0.00955)")
    assert text == ("The best lr of the search (0.00955) lies at the high edge of its range "
                    "[0.0001, 0.01]; the optimum may lie beyond 0.01: widen the range to find out.")
