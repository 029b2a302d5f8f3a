"""The report: its sections in order, over a `Context` computed once.

Owns: which sections a grid, a tuned protocol or a search report has — decided in
`sections_of` alone — and writing the report. Does not own: the context (context.py), what
each section says (sections.py, model_sections.py, search.py, protocol.py), the statistics
(stats.py, strata.py), figures (plots.py) or the page's markup (document.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ablate.analysis import disentanglement, model_sections, plots, protocol, search, sections, transfer
from ablate.analysis.context import Context, build_context
from ablate.study.schema import Study

Section = Callable[[Context], None]


def sections_of(ctx: Context) -> tuple[Section, ...]:
    """The report's sections, in order: the one place a grid's and a search's report differ.

    A grid compares activations over matched blocks (results, statistics, per cell); the tuned
    protocol is a grid of both arms, led by whether its verdict survives tuning; a search shows
    what it found and how (search, pruning, trials). Each section itself says nothing when it
    has nothing to show (e.g. no finished member)."""
    if ctx.study.protocol:
        return (sections.grid_summary, sections.setup, protocol.section, sections.results,
                sections.statistics, sections.collapse, sections.sample_quality, sections.images,
                sections.cost, sections.per_cell, sections.failures, sections.reproduce)
    if ctx.study.search.is_grid:
        return (sections.grid_summary, sections.setup, sections.results, sections.statistics,
                transfer.section, *map(each_dataset, (model_sections.cross_family, model_sections.gans,
                                                      model_sections.encoder_decoder, model_sections.dropout_gap,
                                                      model_sections.learned_shapes,
                                                      model_sections.gradient_flow)),
                disentanglement.section, sections.collapse, sections.sample_quality, sections.images,
                sections.cost, sections.per_cell, sections.failures, sections.reproduce)
    return (search.summary, sections.setup, search.search, sections.collapse,
            sections.sample_quality, sections.images, sections.cost, sections.failures,
            sections.reproduce)


def each_dataset(section: Section) -> Section:
    """A section that pools a study's runs, written once per dataset when it has several."""
    def apart(ctx: Context) -> None:
        for part in ctx.per_dataset():
            section(part)
    return apart


def build_report(study: Study, out_dir: Path) -> Path:
    """Rebuild runs.csv, epochs.csv, trials.csv, figures/ and report.{html,md} from the store."""
    with plots.concurrently():  # the PNGs are written before the page that shows them
        ctx = build_context(study, out_dir)
        if study.description:
            ctx.doc.para(study.description)
        for section in sections_of(ctx):
            section(ctx)
    return ctx.doc.write()
