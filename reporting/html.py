"""One self-contained HTML page: the same sections as Markdown, plus a pairwise heatmap per scenario.

No scripts, fonts or stylesheets from elsewhere: the page opens offline and
can be published as a single file.
"""

from __future__ import annotations

from html import escape

from repromatrix.reporting import analysis, figure
from repromatrix.reporting.model import Report
from repromatrix.reporting.text import RUN_TO_RUN_HEADERS, Section, header_lines, sections

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d1d1f; max-width: 80rem; }
h1 { font-size: 1.5rem; margin-bottom: .5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.headline { font-size: 1.05rem; background: #f4f7fb; border-left: 4px solid #3b6fb6; padding: .6rem 1rem; }
.headline.broken { background: #fff1f0; border-left-color: #c62828; }
.headline p { margin: .25rem 0; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #d0d0d5; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f2f2f5; }
td.FINDING, td.broken { background: #ffd9d6; font-weight: 600; }
td.ERROR, td.error { background: #ffe9c2; } td.WARNING, td.skipped { background: #fff6cc; }
td.held, td.identical { background: #dcf5dc; }
.heatmap td { width: 2.2rem; height: 2.2rem; text-align: center; font-size: 11px; padding: 0; }
.heatmap th.row { white-space: nowrap; font-weight: normal; }
.class-A { background: #cfe8ff; } .class-B { background: #ffe0b3; } .class-C { background: #e1d5ff; }
.class-D { background: #c8f0e0; } .class-E { background: #ffd1e8; } .class-F { background: #e8e8a8; }
.meta { color: #555; }
"""
HIGHLIGHTED = {"FINDING", "ERROR", "WARNING", "broken", "held", "error", "skipped"}


def _cell(value: str, broken_row: bool = False) -> str:
    classes = value if value in HIGHLIGHTED else ""
    if value.startswith("identical"):
        classes = "identical"
    if value.startswith("varies") and broken_row:
        classes = "broken"  # a seeded row that varies is the finding itself
    if len(value) == 1 and value.isalpha():
        classes = f"class-{value}"
    return f'<td class="{classes}">{escape(value)}</td>' if classes else f"<td>{escape(value)}</td>"


def _table(headers: list[str], rows: list[list[str]], css_id: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(str(c), broken_row="broken" in row) for c in row) + "</tr>" for row in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _heat(value: float | None) -> str:
    if value is None:
        return '<td style="background:#eee" title="no stable result">·</td>'
    # Red (nothing shared) through yellow to green (bit-identical).
    hue = int(120 * value)
    return f'<td style="background:hsl({hue},70%,70%)" title="{value:.0%}">{value:.0%}</td>'


def heatmap(report: Report, scenario: str) -> str:
    cells, matrix = analysis.agreement(report.group(scenario))
    measured = sum(bool(v.ok_repeats) for v in report.group(scenario))
    if measured > analysis.PAIRWISE_LIMIT:
        return (
            f"<p>{measured} cells: too many for a pairwise table ({analysis.PAIRWISE_LIMIT} at most); "
            "the class tables above show who shares bits.</p>"
        )
    if all(x is None for row in matrix for x in row):
        return "<p>No cell has one stable result to compare (every cell's repeats differ, or nothing ran).</p>"
    head = "".join(f'<th title="{escape(c)}">{i + 1}</th>' for i, c in enumerate(cells))
    rows = "".join(
        f'<tr><th class="row">{i + 1} {escape(cell)}</th>' + "".join(_heat(x) for x in row) + "</tr>"
        for i, (cell, row) in enumerate(zip(cells, matrix, strict=True))
    )
    return (
        f'<table class="heatmap" data-scenario="{escape(scenario)}"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _section(section: Section, index: int) -> list[str]:
    if section.kind == "headline":
        return []
    body = [f'<h2 id="{section.kind or f"section-{index}"}">{escape(section.title)}</h2>']
    if section.intro and section.kind == "hosts":  # sentences and '- ' lists, as the headline
        body.append(_headline(section.intro.splitlines()))
    elif section.intro:
        body.append(f"<p>{escape(section.intro)}</p>")
    if section.rows:
        body.append(_table(section.headers, section.rows, f"section-{index}"))
    if section.collapsed_rows is not None:
        body.append(
            f"<details><summary>Every cell × scenario variant ({len(section.collapsed_rows)} rows)</summary>"
            + _table(RUN_TO_RUN_HEADERS, section.collapsed_rows, f"section-{index}-full")
            + "</details>"
        )
    return body


def _headline(lines: list[str]) -> str:
    """Sentences as paragraphs; the '- ' lines (one per axis that changes the bits) as a list."""
    parts, items = [], []
    for line in [*lines, ""]:
        if line.startswith("- "):
            items.append(f"<li>{escape(line[2:])}</li>")
            continue
        if items:
            parts.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line:
            parts.append(f"<p>{escape(line)}</p>")
    return "".join(parts)


def page(report: Report) -> str:
    broken = " broken" if report.expectations_broken else ""
    body = ["<h1>repromatrix: bit-identity report</h1>"]
    picture = figure.svg(report)
    if picture:  # a picture first: which change flips which output, at a glance
        # Inline SVG needs no namespace; the page names no URL at all (it is self-contained).
        body.append(f'<div id="figure">{picture.replace(figure.XMLNS, "")}</div>')
    body.append(f'<div class="headline{broken}" id="headline">{_headline(report.headline)}</div>')
    body += [f'<p class="meta">{escape(line)}</p>' for line in header_lines(report)]
    for index, section in enumerate(sections(report, pairwise=False)):
        body += _section(section, index)
    body.append("<h2>Pairwise agreement heatmaps</h2>")
    body.append("<p>Share of compared outputs (every array model1 returns) that two cells produced bit for bit.</p>")
    for scenario in report.scenarios:
        body.append(f"<h3>{escape(scenario)}</h3>")
        body.append(heatmap(report, scenario))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>repromatrix report</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
