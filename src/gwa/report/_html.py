"""Self-contained HTML building blocks: every image is a base64 data URI, styles and the one small script (click a
column header of a ``sortable`` table to sort it) are inline; the page loads nothing."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Set as AbstractSet

import numpy as np

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; max-width: 1080px;
       margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.3em 0.7em; text-align: left; vertical-align: middle; }
th { background: #f5f5f5; } table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-order="asc"]::after { content: " \\25B2"; }
table.sortable th[data-order="desc"]::after { content: " \\25BC"; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.figure { max-width: 100%; height: auto; }
img.thumb { width: 40px; height: 40px; image-rendering: pixelated; }
.note { background: #fff8e1; border-left: 4px solid #e0b000; padding: 0.5em 0.8em; margin: 0.6em 0; }
.guard { background: #fdecea; border-left: 4px solid #c44e52; padding: 0.5em 0.8em; margin: 0.6em 0; }
.noisy { color: #b3541e; font-weight: 600; } .muted { color: #777; font-size: 0.9em; }
"""


def esc(value) -> str:
    return html.escape(str(value))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, *, alt: str, cls: str = "figure") -> str:
    return f'<img class="{cls}" alt="{esc(alt)}" src="{data_uri(png)}">'


def fmt(value, digits: int = 3) -> str:
    """A number for a table cell: fixed digits, '–' for missing/NaN."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


#: Sorts a ``table.sortable`` by the clicked column (numbers numerically, then text; click again to reverse).
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.title = "click to sort";
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.dataset.order !== "asc";
      table.querySelectorAll("thead th").forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = asc ? "asc" : "desc";
      function key(row) {
        var text = row.cells[col].textContent.trim(), value = parseFloat(text);
        return isNaN(value) ? [1, text] : [0, value];
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var c = x[0] - y[0] || (x[0] ? String(x[1]).localeCompare(String(y[1])) : x[1] - y[1]);
        return asc ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def table(
    headers: list[str],
    rows: list[list],
    *,
    numeric: AbstractSet[int] = frozenset(),
    raw: AbstractSet[int] = frozenset(),
    sortable: bool = False,
) -> str:
    """An HTML table; cells are escaped except the columns in ``raw`` (already HTML, e.g. thumbnails);
    ``sortable``: a click on a column header sorts the rows by it."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = cell if i in raw else esc(cell)
            cells.append(f'<td class="num">{text}</td>' if i in numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def sparkline_svg(signal, *, width: int = 90, height: int = 24, color: str = "#4C72B0") -> str:
    """A 1-D signal ``(L,)`` as an inline SVG polyline (no image file needed)."""
    y = np.asarray(signal, dtype=np.float64).ravel()
    y = np.where(np.isfinite(y), y, np.nan)
    lo, hi = np.nanmin(y), np.nanmax(y)
    scaled = (y - lo) / (hi - lo) if hi > lo else np.full_like(y, 0.5)
    xs = np.linspace(1, width - 1, y.size)
    ys = (height - 2) - scaled * (height - 4)
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True) if np.isfinite(b))
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="input signal"><polyline fill="none" stroke="{color}" stroke-width="1.3" '
        f'points="{points}"/></svg>'
    )


def section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>\n{body}\n<script>{SORT_SCRIPT}</script>\n</body></html>\n"
    )
