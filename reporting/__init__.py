"""Result records → the bit-identity report: terminal, Markdown, HTML, JSON and CSV.

`render_all(folders, out)` is the whole pipeline: `model.build` makes the
report as data, `text` and `html` render it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from repromatrix.errors import ReportInputError
from repromatrix.harness import fileio
from repromatrix.reporting import advice, explained, figure, html, text
from repromatrix.reporting.history import timeline
from repromatrix.reporting.history import write as write_history
from repromatrix.reporting.model import Report, build

__all__ = ["Report", "build", "render_all"]


def render_all(folders: list[Path], out: Path, baseline: Path | None = None, history: Path | None = None,
               keep_history: bool = False, across: Sequence[str] = (),
               scenarios: Sequence[str] = ()) -> Report:  # fmt: skip
    """Write report.{md,html,json,csv} into `out`; returns the report (its terminal form: text.terminal).

    With `keep_history` (the published site), also history.json and history/: the timeline of published
    runs, continued from the previous site's history.json at `history` when there is one. With `across`
    (axes such as cpus), what to change to make the cells agree across each (of `scenarios`, else every
    seeded variant): a line in the headline, a section after it, report.json's advice, advice.md.
    """
    report = build(folders, baseline)
    for axis in across:  # what to change, when asked: a section after the headline, a line in it, advice.md
        report.advice += advice.advise(report.variants, axis, scenarios)
    report.headline += advice.headline(report.advice)
    report.explained = explained.read(out)  # what `explain` traced into this report folder
    if keep_history:
        report.timeline = timeline(report, history)
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
        **({"advice.md": advice.markdown(report.advice, advice.question(across))} if across else {}),
    }
    for name, content in outputs.items():
        fileio.write_text(out / name, content)
    if report.timeline is not None:
        write_history(report.timeline, out, history)
    return report
