"""A report document written as HTML and Markdown side by side, and how numbers are shown in it.

Owns: the page's markup and style, escaping, embedding figures, sortable tables, number and
interval formatting, atomic writes of the two files. Does not own: what a report says
(sections.py) or which sections it has (report.py).
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path

import pandas as pd

from ablate.files import atomic_open


def _inline(text: str) -> str:
    """Markdown-ish text as HTML: escaped, `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def fmt(x, digits: int = 2) -> str:
    """A number as a table shows it; missing or non-finite as an en dash."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def ci(row, digits: int = 2) -> str:
    """`mean [ci_low, ci_high]` of a summary row; the mean alone when there is no interval."""
    if not math.isfinite(row["ci_low"]):
        return f"{fmt(row['mean'], digits)}"
    return f"{fmt(row['mean'], digits)} [{fmt(row['ci_low'], digits)}, {fmt(row['ci_high'], digits)}]"


def where(axis: str, value) -> str:
    """`axis = value`, floats in their shortest form."""
    return f"{axis} = {value:g}" if isinstance(value, float) else f"{axis} = {value}"


def upper(text: str) -> str:
    """The text with its first letter capitalised (the rest as it is)."""
    return text[:1].upper() + text[1:]


def param(v):
    """A parameter value as a table shows it: floats to 3 significant digits."""
    return f"{v:.3g}" if isinstance(v, float) else v


class Doc:
    """Builds the HTML and Markdown versions side by side; escapes every string in HTML."""

    def __init__(self, title: str, root: Path):
        self.html: list[str | tuple[Path, str]] = [f"<h1>{html.escape(title)}</h1>"]
        """Markup, and (PNG, caption) of each figure: embedded when the page is written, as
        the PNG may still be being drawn (plots.concurrently)."""
        self.md: list[str] = [f"# {title}", ""]
        self.title = title
        self.root = root
        """The folder report.md lives in: figure links are relative to it."""

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md += [f"{'#' * level} {text}", ""]

    def para(self, text: str) -> None:
        self.html.append(f"<p>{_inline(text)}</p>")
        self.md += [text, ""]

    def bullets(self, items: list[str]) -> None:
        if not items:
            return
        self.html.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
        self.md += [f"- {t}" for t in items] + [""]

    def code(self, text: str) -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md += ["```yaml", text.rstrip(), "```", ""]

    def table(self, frame: pd.DataFrame) -> None:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                       for row in frame.itertuples(index=False))
        self.html.append(f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        self.md.append("| " + " | ".join(map(str, frame.columns)) + " |")
        self.md.append("|" + "---|" * len(frame.columns))
        for row in frame.itertuples(index=False):
            self.md.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        self.md.append("")

    def figure(self, path: Path, caption: str) -> None:
        self.html.append((path, caption))
        self.md += [f"![{caption}]({path.relative_to(self.root).as_posix()})", "", f"*{caption}*", ""]

    def write(self) -> Path:
        """Write report.html and report.md into the root folder; returns the HTML's path."""
        for name, text in (("report.html", self.render_html()), ("report.md", "\n".join(self.md) + "\n")):
            with atomic_open(self.root / name) as f:
                f.write(text)
        return self.root / "report.html"

    @staticmethod
    def _embed(path: Path, caption: str) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f'<figcaption>{html.escape(caption)}</figcaption></figure>')

    def render_html(self) -> str:
        body = [part if isinstance(part, str) else self._embed(*part) for part in self.html]
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
code {{ background: #f6f8fa; padding: 0 0.25em; font-size: 0.92em; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 13px; color: #57606a; }}
@media print {{ body {{ max-width: none; }} figure, table {{ page-break-inside: avoid; }} }}
th {{ cursor: pointer; }} th:hover {{ background: #e2eaf2; }}
ul {{ padding-left: 1.3em; }} li {{ margin: .3em 0; }}
</style></head><body>
{os.linesep.join(body)}
<script>
// Click a column header to sort by it (numbers by value; click again to reverse).
document.querySelectorAll("table.sortable th").forEach((th, col) => th.addEventListener("click", () => {{
  const body = th.closest("table").tBodies[0], rows = Array.from(body.rows);
  const dir = th.dataset.dir === "asc" ? -1 : 1; th.dataset.dir = dir === 1 ? "asc" : "desc";
  const key = r => {{ const t = r.cells[col].textContent.trim(), n = parseFloat(t);
                      return isNaN(n) ? t : n; }};
  rows.sort((a, b) => {{ const x = key(a), y = key(b);
    return (typeof x === typeof y ? (x > y) - (x < y) : typeof x === "number" ? -1 : 1) * dir; }});
  rows.forEach(r => body.appendChild(r));
}}));
</script>
</body></html>
"""
