"""The report: tables and figures derived from the store, as self-contained HTML and Markdown.

Owns: which sections exist, their wording, and writing report.html / report.md / CSVs /
figures. Does not own: statistics (stats.py) or figure drawing (plots.py).
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from ablate import plots, stats
from ablate.runner import MAXIMIZE, open_store
from ablate.study import Study
from ablate.tables import epochs_frame, runs_frame, write_csv


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ci(row, digits: int = 2) -> str:
    if not math.isfinite(row["ci_low"]):
        return f"{_fmt(row['mean'], digits)}"
    return f"{_fmt(row['mean'], digits)} [{_fmt(row['ci_low'], digits)}, {_fmt(row['ci_high'], digits)}]"


class _Doc:
    """Builds the HTML and Markdown versions side by side; escapes every string in HTML."""

    def __init__(self, title: str):
        self.html: list[str] = []
        self.md: list[str] = [f"# {title}", ""]
        self.title = title

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md += [f"{'#' * level} {text}", ""]

    def para(self, text: str) -> None:
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md += [text, ""]

    def code(self, text: str) -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md += ["```yaml", text.rstrip(), "```", ""]

    def table(self, frame: pd.DataFrame) -> None:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                       for row in frame.itertuples(index=False))
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        self.md.append("| " + " | ".join(map(str, frame.columns)) + " |")
        self.md.append("|" + "---|" * len(frame.columns))
        for row in frame.itertuples(index=False):
            self.md.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        self.md.append("")

    def figure(self, path: Path, caption: str, root: Path) -> None:
        data = base64.b64encode(path.read_bytes()).decode()
        self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
                         f'{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')
        self.md += [f"![{caption}]({path.relative_to(root).as_posix()})", "", f"*{caption}*", ""]

    def render_html(self) -> str:
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #1b1f24; }}
h1 {{ border-bottom: 2px solid #2f6690; padding-bottom: .2em; }}
h2 {{ margin-top: 2em; color: #2f6690; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
th, td {{ border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f4f8; }} td:first-child, th:first-child {{ text-align: left; }}
tbody tr:nth-child(even) {{ background: #f8fafc; }}
pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 12px; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 13px; color: #57606a; }}
@media print {{ body {{ max-width: none; }} figure, table {{ page-break-inside: avoid; }} }}
</style></head><body>
{os.linesep.join(self.html)}
</body></html>
"""


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def build_report(study: Study, out_dir: Path) -> Path:
    """Rebuild runs.csv, epochs.csv, figures/ and report.{html,md} from the store."""
    store = open_store(study, out_dir, create=False)
    runs = runs_frame(store, study)
    epochs = epochs_frame(store, study)
    write_csv(runs, out_dir / "runs.csv")
    write_csv(epochs, out_dir / "epochs.csv")
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)

    metric = study.metric
    maximize = metric in MAXIMIZE
    better = "higher" if maximize else "lower"
    info = store.user_attrs
    doc = _Doc(f"ablate report: {study.name}")
    doc.html.append(f"<h1>{html.escape(doc.title)}</h1>")
    if study.description:
        doc.para(study.description)

    total = len(study.points()) * len(study.seeds)
    ok = runs[runs["status"] == "ok"]
    doc.heading("Summary")
    doc.para(f"{len(runs)} of {total} members finished ({len(ok)} trained to the end, "
             f"{int((runs['status'] == 'failed').sum())} failed). Metric: {plots.label(metric)}, "
             f"{better} is better; intervals are 95% bootstrap confidence intervals over seeds.")
    cells = [c for c in ("latent_dim", "kl_weight") if c in runs.columns]
    if not ok.empty:
        rank = stats.ranking(runs, metric, cells, maximize)
        best = rank.iloc[0]
        doc.para(f"Best mean over all cells: {best['activation']} ({_ci(best)}). "
                 "Whether its lead is significant is not tested in this report version; "
                 "overlapping intervals mean the ranking may not be separable.")

    doc.heading("Setup")
    data = info.get("data", {})
    doc.para(f"Dataset {study.dataset['name']}: {data.get('n_train', '?')} training and "
             f"{data.get('n_test', '?')} test images of {data.get('dim', '?')} pixels. "
             f"Device: {info.get('device', '?')}. Seeds: {', '.join(map(str, study.seeds))}.")
    doc.code(study.source)

    if not ok.empty:
        doc.heading("Ranking of activations")
        rank_view = rank.assign(**{metric: rank.apply(_ci, axis=1)})[
            ["rank", "activation", metric, "n", "failed"]]
        doc.para("Each activation's metric averaged over every latent_dim × kl_weight cell, "
                 "then mean and 95% CI over seeds.")
        doc.table(rank_view.rename(columns={"n": "seeds"}))

        order = plots.activation_order(runs, metric, maximize)
        doc.heading("Figures")
        doc.figure(plots.heatmaps(runs, metric, order, fig_dir / "heatmap.png"),
                   f"Mean {plots.label(metric)} per activation and latent_dim, one panel per kl_weight.",
                   out_dir)
        doc.figure(plots.boxes(runs, metric, order, fig_dir / "ranking.png"),
                   f"{plots.label(metric)} of every member (box over cells and seeds, points "
                   "coloured by kl_weight), activations ordered by mean.", out_dir)
    if not epochs.empty:
        order = plots.activation_order(runs, metric, maximize)
        doc.figure(plots.curves(epochs, order, fig_dir / "curves.png"),
                   "Test negative ELBO per epoch, mean over cells and seeds with a 95% CI band.",
                   out_dir)
    if not ok.empty:
        doc.heading("Per cell")
        cell = stats.summarize(runs, metric, ["latent_dim", "kl_weight", "activation"])
        cell = cell.sort_values(["latent_dim", "kl_weight", "mean"],
                                ascending=[True, True, not maximize])
        view = cell.assign(**{metric: cell.apply(_ci, axis=1)})[
            ["latent_dim", "kl_weight", "activation", metric, "n"]]
        doc.table(view.rename(columns={"n": "seeds"}))

    doc.heading("Failures")
    failed = runs[runs["status"] != "ok"]
    if failed.empty:
        doc.para("No member failed.")
    else:
        doc.table(failed[["activation", "latent_dim", "kl_weight", "seed", "status", "fail_epoch",
                          "reason"]].assign(fail_epoch=lambda f: f["fail_epoch"].map(
                              lambda v: "–" if pd.isna(v) else int(v))))

    doc.heading("Reproduce")
    doc.para(f"make study STUDY={study.path}   (or: ablate run {study.path})")

    _atomic_write(out_dir / "report.html", doc.render_html())
    _atomic_write(out_dir / "report.md", "\n".join(doc.md) + "\n")
    return out_dir / "report.html"
