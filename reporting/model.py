"""The report as data: everything every renderer shows, built once from the records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repromatrix.reporting import analysis, distances, drift, headline, hostid, matter
from repromatrix.reporting import hosts as host_comparison
from repromatrix.reporting.load import load


@dataclass
class Report:
    sources: list[str]
    generated_at: str
    warnings: list[str]
    variants: list[analysis.Variant]
    findings: list[analysis.Finding]
    tables: list[analysis.ClassTable]
    attribution: list[analysis.Attribution]
    headline: list[str]
    hosts: list[dict[str, Any]] = field(default_factory=list)
    left_out_of_plan: int = 0
    baseline: str | None = None
    drift: list[dict[str, str]] | None = None
    timeline: list[dict[str, Any]] | None = None  # published runs, oldest first (reporting/history.py)
    comparison: host_comparison.HostComparison | None = None  # hosts against each other (reporting/hosts.py)
    evidence: matter.Evidence | None = None  # the seed-to-seed spreads (reporting/matter.py)
    advice: list[Any] = field(default_factory=list)  # what to change, when asked (reporting/advice.py's Advice)
    explained: list[Any] = field(default_factory=list)  # explain/ in the report folder (reporting/explained.py)

    @property
    def scenarios(self) -> list[str]:
        return sorted({v.name for v in self.variants})

    @property
    def expectations_broken(self) -> int:
        return sum(f.severity == analysis.Severity.FINDING for f in self.findings)

    def group(self, scenario: str) -> list[analysis.Variant]:
        return [v for v in self.variants if v.name == scenario]

    def variant(self, cell_id: str, scenario: str) -> analysis.Variant | None:
        return next((v for v in self.variants if v.cell_id == cell_id and v.name == scenario), None)


def _with_hosts(lines: list[str], host_lines: list[str], hosts: list[dict[str, Any]]) -> list[str]:
    """Host against host just before the line that names the hosts (the headline's last)."""
    at = len(lines) - 1 if headline.hosts_line(hosts) else len(lines)
    return lines[:at] + host_lines + lines[at:]


def build(folders: list[Path], baseline: Path | None = None) -> Report:
    loading = load(folders)
    arrays = distances.Arrays()
    found = analysis.variants(loading.records, arrays, loading.published)
    tables = analysis.class_tables(found)
    analysis.add_distances(tables, arrays)
    evidence = matter.evidence(found, loading.spread, arrays)
    findings = matter.annotate_findings(analysis.findings(found), found, evidence)
    attributed = analysis.attribution(found, arrays)
    matter.annotate_attribution(attributed, evidence)
    matter.annotate_classes(tables, found, evidence)
    hosts = analysis.hosts_of(loading.records)
    loading.warnings += hostid.clash_warnings(item.record.host for item in loading.records)
    known = {hostid.key_of_json(h) for h in hosts}
    hosts += [{**h, "published": str(p.path)} for p in loading.published for h in p.hosts
              if hostid.key_of_json(h) not in known]  # fmt: skip
    compared = host_comparison.compare(found, hosts, loading.notes)
    report = Report(
        sources=[str(f) for f in folders],
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        warnings=loading.warnings,
        variants=found,
        findings=findings,
        tables=tables,
        attribution=attributed,
        headline=_with_hosts(headline.headline(found, findings, attributed, hosts), compared.headline(), hosts)
        + headline.against_published(found),
        hosts=hosts,
        left_out_of_plan=loading.left_out_of_plan,
        comparison=compared,
        evidence=evidence,
    )
    if baseline is not None:
        report.baseline = str(baseline)
        try:
            report.drift = drift.drift(drift.summary_for_drift(found), drift.load_baseline(baseline))
            matter.annotate_drift(report.drift, found, evidence, baseline)
        except ValueError as exc:
            report.warnings.append(f"{exc}; drift not computed")
        before = {h.get("id") for h in drift.baseline_hosts(baseline)}
        now = {h.get("id") for h in hosts}
        if before and now and before != now:
            labels = ", ".join(sorted(str(h.get("label")) for h in drift.baseline_hosts(baseline)))
            report.warnings.append(
                f"the baseline {baseline} was measured on another host ({labels}) than this report "
                f"({', '.join(sorted(str(h.get('label')) for h in hosts))}): its drift mixes a change of machine "
                "with any other change"
            )
    return report
