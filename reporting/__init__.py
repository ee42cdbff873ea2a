"""Result records → the bit-identity report: terminal, Markdown, HTML, JSON and CSV.

`render_all(folders, out)` is the whole pipeline; `build` and the renderers
are its parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reporting import analysis
from reporting.load import load
from scenarios import _records


@dataclass
class Report:
    sources: list[str]
    generated_at: str
    warnings: list[str]
    variants: list[analysis.Variant]
    findings: list[analysis.Finding]
    tables: list[analysis.ClassTable]
    baseline: str | None = None
    drift: list[dict[str, str]] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def scenarios(self) -> list[str]:
        return sorted({v.name for v in self.variants})

    def group(self, scenario: str) -> list[analysis.Variant]:
        return [v for v in self.variants if v.name == scenario]


def build(folders: list[Path], baseline: Path | None = None) -> Report:
    records, warnings = load(folders)
    found = analysis.variants(records)
    tables = analysis.class_tables(found)
    analysis.add_distances(tables)
    report = Report(
        sources=[str(f) for f in folders],
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        warnings=warnings,
        variants=found,
        findings=analysis.findings(found),
        tables=tables,
    )
    if baseline is not None:
        report.baseline = str(baseline)
        try:
            report.drift = analysis.drift(analysis.summary_for_drift(found), analysis.load_baseline(baseline))
        except ValueError as exc:
            report.warnings.append(f"{exc}; drift not computed")
    return report


def render_all(folders: list[Path], out: Path, baseline: Path | None = None) -> str:
    """Write report.{md,html,json,csv} into `out`; returns the terminal rendering."""
    from reporting import html, text

    report = build(folders, baseline)
    if not report.variants:
        problems = "; ".join(report.warnings) or "no records in them"
        raise ValueError(f"nothing to report from {', '.join(map(str, folders))}: {problems}")
    outputs: dict[str, Any] = {
        "report.md": text.markdown(report),
        "report.html": html.page(report),
        "report.json": text.json_report(report),
        "report.csv": text.csv_rows(report),
    }
    for name, content in outputs.items():
        _records.write_text(out / name, content)
    return text.terminal(report)
