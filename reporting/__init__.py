"""Result records → the bit-identity report: terminal, Markdown, HTML, JSON and CSV.

`render_all(folders, out)` is the whole pipeline: `model.build` makes the
report as data, `text` and `html` render it.
"""

from __future__ import annotations

from pathlib import Path

from repromatrix.errors import ReportInputError
from repromatrix.reporting import figure, html, text
from repromatrix.reporting.model import Report, build
from repromatrix.scenarios import records

__all__ = ["Report", "build", "render_all"]


def render_all(folders: list[Path], out: Path, baseline: Path | None = None) -> Report:
    """Write report.{md,html,json,csv} into `out`; returns the report (its terminal form: text.terminal)."""
    report = build(folders, baseline)
    if not report.variants:
        problems = "; ".join(report.warnings) or "no records in them"
        raise ReportInputError(
            f"nothing to report from {', '.join(map(str, folders))}: {problems} (pass the folder given to --results)"
        )
    picture = figure.svg(report)
    outputs = {
        **({"figure.svg": picture} if picture else {}),
        "report.md": text.markdown(report, figure="figure.svg" if picture else ""),
        "report.html": html.page(report),
        "report.json": text.json_report(report),
        "report.csv": text.csv_rows(report),
    }
    for name, content in outputs.items():
        records.write_text(out / name, content)
    return report
