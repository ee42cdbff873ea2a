"""The at-a-glance figure: which change flips which output, and by how much.

Rows are axis transitions (oneDNN on→off, TensorFlow 2.16.2→2.21.0, host a→b...), columns are
scenario variant · output, each box shaded by the share of pairs of cells (differing in that axis
alone) whose bits differ and annotated with that share and the largest difference. Plain SVG: no
script, no font, readable in grey scale (the numbers say what the shade says), inline in the HTML
page and written beside report.md as figure.svg, so the Markdown and the job summary show it too.
"""

from __future__ import annotations

from html import escape

from repromatrix.harness import axes
from repromatrix.reporting import analysis, distances
from repromatrix.reporting.model import Report

ROW_H = 30
COL_W = 132
LABEL_W = 250
HEAD_H = 76
FONT = "font-family:sans-serif"
XMLNS = ' xmlns="http://www.w3.org/2000/svg"'  # a file needs it; a page's inline SVG does not


def _short(distance: distances.Distance) -> str:
    """'8 ULP', '|Δ| 1.1', '≥3 ULP est.': what fits in a box."""
    if distance.max_abs is None:
        return "n/a" if distance.note == distances.UNAVAILABLE else ""
    if distance.max_abs == 0:
        return "±0" if not distance.sampled else "elsewhere"
    # A few ULP is the clearest word; past a thousand, the size of the difference says more.
    few = distance.ulp_meaningful and distance.max_ulp is not None and distance.max_ulp <= 1000
    text = f"{distance.max_ulp} ULP" if few else f"|Δ| {distance.max_abs:.2g}"
    return ("≥" + text + " est.") if distance.sampled else text


def grid(report: Report) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
    """(rows: (axis, transition)), (columns: (scenario, output)), {(row, column): (differ, pairs, distance)}."""
    stable = [a for a in report.attribution if a.expected_stable and a.pairs]
    flips: dict[tuple[str, str], int] = {}
    for a in stable:
        flips[(a.axis, a.transition)] = flips.get((a.axis, a.transition), 0) + a.differ
    # Most differing pairs first, as the headline lists them; changes that flip nothing last.
    rows = sorted(flips, key=lambda r: (-flips[r], axes.axis(r[0]).label, r[1]))
    columns = sorted({(a.scenario, a.output) for a in stable}, key=lambda c: (c[0], analysis.output_order(c[1])))
    boxes: dict = {}
    for a in stable:
        key = ((a.axis, a.transition), (a.scenario, a.output))
        differ, pairs, distance = boxes.get(key, (0, 0, distances.Distance()))
        boxes[key] = (differ + a.differ, pairs + a.pairs, distance.worse(a.distance) if a.differ else distance)
    return rows, columns, boxes


def _text_width(text: str) -> float:
    """Pixels a 12 px sans-serif line takes, generously: no font is embedded, so no exact metrics."""
    return 7.0 * len(text)


LEGEND = (
    "Each box: pairs (cells differing in that change alone) whose bits differ / pairs compared · largest difference.",
    "Darker: flips more often; white: never flips that output; est.: read on a kept sample.",
    "Left stripe, does it matter beside the seed-to-seed spread: green bit-level, amber small, red material.",
)
# The verdict of reporting/matter.py, as a stripe at a box's left edge (its word is in the box's tooltip).
STRIPES = {"bit-level": "#2e7d32", "small": "#e0a100", "material": "#c62828"}


def svg(report: Report) -> str:
    """The figure, or '' when no pair of cells differs in one axis alone."""
    rows, columns, boxes = grid(report)
    if not rows or not columns:
        return ""
    verdicts = {((a.axis, a.transition), (a.scenario, a.output)): a.matter for a in report.attribution
                if a.matter is not None and a.differ and a.matter.verdict in STRIPES}  # fmt: skip
    labels = [f"{axes.axis(axis).label} {transition}" for axis, transition in rows]
    label_w = max(_text_width(label) for label in labels) + 16
    scenarios = list(dict.fromkeys(scenario for scenario, _ in columns))
    # A column wide enough for its box text, and each scenario's columns together for its name.
    col_w = max(COL_W, *(_text_width(s) / sum(c[0] == s for c in columns) + 8 for s in scenarios))
    width = max(label_w + col_w * len(columns) + 10, *(_text_width(line) + 16 for line in LEGEND))
    height = HEAD_H + ROW_H * len(rows) + 16 * len(LEGEND) + 16
    out = [
        f'<svg{XMLNS} width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" role="img" aria-label="What changes the bits" class="figure" '
        f'style="{FONT};font-size:12px">',
        f'<rect width="{width:.0f}" height="{height}" fill="#ffffff"/>',
    ]
    for scenario in scenarios:  # one heading over the outputs of each scenario variant
        first = next(j for j, c in enumerate(columns) if c[0] == scenario)
        count = sum(c[0] == scenario for c in columns)
        x = label_w + first * col_w
        out.append(f'<text x="{x + count * col_w / 2:.0f}" y="{HEAD_H - 34}" text-anchor="middle" '
                   f'font-weight="600">{escape(scenario)}</text>')  # fmt: skip
        out.append(f'<line x1="{x + 4:.0f}" x2="{x + count * col_w - 4:.0f}" y1="{HEAD_H - 28}" y2="{HEAD_H - 28}" '
                   'stroke="#888888"/>')  # fmt: skip
    for j, (_, output) in enumerate(columns):
        x = label_w + j * col_w + col_w / 2
        out.append(
            f'<text x="{x:.0f}" y="{HEAD_H - 10}" text-anchor="middle">{escape(output.removeprefix("model1."))}</text>'
        )
    for i, ((axis, transition), label) in enumerate(zip(rows, labels, strict=True)):
        y = HEAD_H + i * ROW_H
        out.append(f'<text x="{label_w - 8:.0f}" y="{y + ROW_H / 2 + 4}" text-anchor="end">{escape(label)}</text>')
        for j, column in enumerate(columns):
            x = label_w + j * col_w
            box = boxes.get(((axis, transition), column))
            if box is None or not box[1]:
                out.append(f'<rect x="{x + 1:.0f}" y="{y + 1}" width="{col_w - 2:.0f}" height="{ROW_H - 2}" '
                           'fill="#f7f7f7" stroke="#dddddd"/>')  # fmt: skip
                continue
            differ, pairs, distance = box
            share = differ / pairs
            grey = int(245 - 170 * share)  # white: never differs; dark: always
            ink = "#000000" if grey > 140 else "#ffffff"
            out.append(f'<rect x="{x + 1:.0f}" y="{y + 1}" width="{col_w - 2:.0f}" height="{ROW_H - 2}" '
                       f'fill="rgb({grey},{grey},{grey})" stroke="#888888">'
                       f"<title>{escape(f'{label}: {differ}/{pairs} pairs differ')}</title></rect>")  # fmt: skip
            judged = verdicts.get(((axis, transition), column))
            if judged is not None:
                stripe = STRIPES[judged.verdict]
                out.append(f'<rect x="{x + 1:.0f}" y="{y + 1}" width="5" height="{ROW_H - 2}" fill="{stripe}">'
                           f"<title>{escape(judged.text())}</title></rect>")  # fmt: skip
            text = f"{differ}/{pairs}" + (f" · {_short(distance)}" if differ and _short(distance) else "")
            out.append(f'<text x="{x + col_w / 2:.0f}" y="{y + ROW_H / 2 + 4}" text-anchor="middle" fill="{ink}">'
                       f"{escape(text)}</text>")  # fmt: skip
    legend_y = HEAD_H + ROW_H * len(rows) + 22
    for k, line in enumerate(LEGEND):
        out.append(f'<text x="8" y="{legend_y + 16 * k}" fill="#444444">{escape(line)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
