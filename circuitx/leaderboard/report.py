"""The leaderboard as a web page: ``index.html`` with the results table (sortable by any
column), the ROC and faithfulness plots, and a link from each row to each seed's circuit
as an interactive page (``circuits/*.html``, :mod:`circuitx.drawing.page`). It stands
alone but for those files beside it: no script, style or font from elsewhere."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from circuitx.drawing import draw
from circuitx.files import atomic_open
from circuitx.graph import shape_of
from circuitx.graph_files import from_json_dict
from circuitx.leaderboard.cells import Cell
from circuitx.leaderboard.results import COLUMNS, table
from circuitx.reference import from_circuit_record
from circuitx.version import __version__

PAGES = "circuits"  # the circuit pages' folder, beside index.html

SORT_SCRIPT = """
(function () {
  "use strict";
  const body = document.querySelector("#results tbody");
  document.querySelectorAll("#results th").forEach((heading, column) => {
    heading.addEventListener("click", () => {
      const ascending = heading.getAttribute("aria-sort") !== "ascending";
      document.querySelectorAll("#results th").forEach((h) => h.removeAttribute("aria-sort"));
      heading.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = heading.dataset.kind === "number";
      const key = (row) => row.children[column].dataset.value;
      const rows = Array.from(body.rows).sort((a, b) => {
        const x = key(a), y = key(b);
        if (numeric) {  // rows with no value last, either way
          if (x === "" || y === "") return (x === "") - (y === "");
          return ascending ? Number(x) - Number(y) : Number(y) - Number(x);
        }
        return ascending ? x.localeCompare(y) : y.localeCompare(x);
      });
      body.append(...rows);
    });
  });
})();
"""

STYLE = """
body { font-family: sans-serif; margin: 18px; color: #222222; }
h1 { font-size: 19px; } h2 { font-size: 16px; margin-top: 26px; }
.caption { font-size: 13px; color: #555555; max-width: 1100px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e3e3e3; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.links, td:nth-child(-n+2) { white-space: nowrap; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td.error { color: #aa0000; }
img { max-width: 100%; border: 1px solid #eeeeee; margin: 4px 0; }
"""


def file_stem(text: str) -> str:
    """``text`` as a file name's stem of letters (an accented one too), digits, '.', '_'
    and '-' (the others as '_')."""
    return re.sub(r"[^\w.-]+", "_", text)


def page_name(cell: Cell) -> str:
    """The file name of a cell's circuit page: task, method, model and seed."""
    model = Path(cell.model).name or cell.model
    return file_stem(f"{cell.task}-{cell.method}-{model}-seed{cell.seed}") + ".html"


def write_circuit_pages(
    out_dir: Path, cells: list[Cell], records: list[dict[str, Any]]
) -> dict[str, str]:
    """Each finished cell's circuit as an interactive page under ``out_dir/circuits``,
    against its reference; returns the pages' paths relative to ``out_dir`` by cell key
    (cells that ran before records kept their graph have none)."""
    pages = {}
    drawable = [(c, r) for c, r in zip(cells, records) if r["status"] == "ok" and r.get("graph")]
    if drawable:
        (out_dir / PAGES).mkdir(exist_ok=True)
    for cell, record in drawable:
        graph = from_json_dict(record["graph"])
        circuit = record.get("reference_circuit")
        reference = None if circuit is None else from_circuit_record(circuit, *shape_of(graph))
        relative = f"{PAGES}/{page_name(cell)}"
        draw(graph, out_dir / relative, reference)
        pages[cell.key] = relative
    return pages


def write_report(
    path: Path,
    cells: list[Cell],
    rows: list[dict[str, Any]],
    caption: str,
    figures: list[str],
    pages: dict[str, str],
    notes: Sequence[str] = (),
) -> None:
    """Write ``index.html``: the table (one row per task, method and model, a link per
    seed's circuit page), the ``notes`` the terminal shows under it (the runs' warnings),
    then the ``figures`` (file names beside it)."""
    seeds: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for cell in cells:
        if cell.key in pages:
            group = seeds.setdefault((cell.task, cell.method, cell.model), [])
            group.append((cell.seed, pages[cell.key]))
    headings, body = table(rows)
    kinds = ["text", "text", *("number" for _ in COLUMNS), "error"][: len(headings)]
    head = "".join(
        f'<th data-kind="{"text" if kind == "error" else kind}">{html.escape(h)}</th>'
        for h, kind in zip(headings, kinds)
    )
    lines = []
    for row, shown in zip(rows, body):
        values = [row["label"], row["method"], *(row[key]["mean"] for key, _, _ in COLUMNS)]
        values += [row["error"] or ""][: len(shown) - len(values)]
        cells_html = []
        for value, text, kind in zip(values, shown, kinds):
            data = "" if value is None else html.escape(str(value), quote=True)
            css = kind if kind in ("number", "error") and text else ""
            cells_html.append(f'<td class="{css}" data-value="{data}">{html.escape(text)}</td>')
        links = " ".join(
            f'<a href="{html.escape(quote(page))}">seed {seed}</a>'
            for seed, page in seeds.get((row["task"], row["method"], row["model"]), [])
        )
        cells_html.append(f'<td class="links" data-value="">{links or "-"}</td>')
        lines.append("<tr>" + "".join(cells_html) + "</tr>")
    listed = "".join(
        f"<li>{html.escape(line.removeprefix('note: '))}</li>"  # a warning says it is one
        for line in notes
    )
    said = f'<h2>Notes</h2>\n<ul class="notes">{listed}</ul>' if notes else ""
    images = "\n".join(
        f'<img src="{html.escape(quote(name))}" alt="{html.escape(Path(name).stem)}">'
        for name in figures  # a task file's name may hold a space, '#' or '?'
    )
    text = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="circuitx {__version__}">
<title>circuitx leaderboard</title>
<style>{STYLE}</style>
</head>
<body>
<h1>circuitx leaderboard</h1>
<p class="caption">{html.escape(caption)}</p>
<p class="caption">Click a heading to sort by it; a row's seeds link to their circuits
(interactive pages, against the reference). Also as
<a href="results.json">results.json</a>, <a href="results.csv">results.csv</a> and
<a href="results.md">results.md</a>.</p>
<table id="results">
<thead><tr>{head}<th data-kind="text">circuits</th></tr></thead>
<tbody>
{chr(10).join(lines)}
</tbody>
</table>
{said}
<h2>ROC and faithfulness curves</h2>
<p class="caption">The faithfulness curves keep the edges with the largest |score|, as
CMD does (a node method's edges go by the smaller |score| of their two ends); CPR ranks
them by signed score, as MIB's: where a method's scores take both signs, its CPR curve is
drawn too, thin with x markers (docs/methods.md, Faithfulness).</p>
{images or "<p>No curves: no cell had a reference or a faithfulness curve.</p>"}
<script>{SORT_SCRIPT}</script>
</body>
</html>
"""
    with atomic_open(path) as handle:
        handle.write(text)
