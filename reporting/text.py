"""Text renderings: terminal and GitHub Markdown share one list of sections; JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from reporting import Report, analysis

# GitHub refuses a step summary over 1 MiB; leave room for what other steps add.
MARKDOWN_LIMIT = 900 * 1024


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]
    intro: str = ""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def environment_column(cell_id: str) -> str:
    """The cell id without its TF version: device × recipe × knobs."""
    return re.sub(r"^tf[^-]+-", "", cell_id)


def _distance(value: Any, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def summary_rows(report: Report) -> list[list[str]]:
    """One row per cell × scenario variant; a cell skipped whole for one reason gets a single row."""
    rows = []
    by_cell: dict[str, list[analysis.Variant]] = {}
    for v in report.variants:
        by_cell.setdefault(v.cell_id, []).append(v)
    for cell_id, group in by_cell.items():
        reasons = {v.message for v in group}
        if len(group) > 1 and all(v.status == "skipped" for v in group) and len(reasons) == 1:
            rows.append([cell_id, f"all {len(group)}", "skipped", "—", "—", "—", "untested", reasons.pop()])
            continue
        for v in group:
            nothing = "—" if not v.ok_repeats else ""
            run_to_run = nothing or f"{v.run_to_run} ×{v.ok_repeats}"
            note = v.message if v.status != "ok" else "; ".join(v.claim_reasons)
            rows.append(
                [cell_id, v.name, v.status, run_to_run, nothing or v.in_process, v.ran_on or "—", v.claim, note]
            )
    return rows


def compatibility(report: Report, table: analysis.ClassTable) -> Section:
    cells = {v.cell_id: v for v in report.group(table.scenario)}
    columns = sorted({environment_column(c) for c in table.by_cell})
    versions = sorted({cells[c].cell.get("tf", c) for c in table.by_cell}, key=_version_key)
    rows = []
    for version in versions:
        row = [version]
        for column in columns:
            matches = [
                letter
                for cell_id, letter in table.by_cell.items()
                if cells[cell_id].cell.get("tf") == version and environment_column(cell_id) == column
            ]
            row.append(",".join(matches) or "")
        rows.append(row)
    legend = ", ".join(
        f"{letter} = {len(c['cells'])} cell{'s' if len(c['cells']) != 1 else ''}" for letter, c in table.classes.items()
    )
    return Section(
        f"{table.scenario} · {table.output}",
        ["TF", *columns],
        rows,
        intro=f"Classes: {legend or 'none'}. {analysis.VARIES} = repeats differ, {analysis.NO_RESULT} = no result.",
    )


def sections(report: Report, pairwise: bool) -> list[Section]:
    found = [[f.severity.upper(), f.cell_id, f.scenario, f.text] for f in report.findings]
    result = [
        Section(
            "Findings",
            ["kind", "cell", "scenario", "what"],
            found,
            intro="Every expectation held."
            if not found
            else "Seeded variants are expected identical; unseeded ones to vary.",
        ),
        Section(
            "Run to run, per cell",
            ["cell", "scenario", "status", "run to run", "in-process", "ran on", "article's claim", "note"],
            summary_rows(report),
        ),
    ]
    for table in report.tables:
        result.append(compatibility(report, table))
        if table.distances:
            result.append(
                Section(
                    f"{table.scenario} · {table.output}: distances between classes",
                    ["classes", "max |Δ|", "max ULP", "note"],
                    [
                        [f"{d['a']}–{d['b']}", _distance(d["max_abs"], ".3g"), _distance(d["max_ulp"], "d"), d["note"]]
                        for d in table.distances
                    ],
                )
            )
    if pairwise:
        for scenario in report.scenarios:
            cells, matrix = analysis.pairwise(report.group(scenario))
            if all(x is None for row in matrix for x in row):
                continue  # nothing stable to compare: the run-to-run table already says so
            labels = [str(i + 1) for i in range(len(cells))]
            rows = [
                [f"{i + 1} {cell}", *("·" if x is None else f"{x:.0%}" for x in row)]
                for i, (cell, row) in enumerate(zip(cells, matrix, strict=True))
            ]
            result.append(
                Section(
                    f"{scenario}: pairwise agreement",
                    ["cell", *labels],
                    rows,
                    intro="Share of compared outputs that are bit-identical; · = a cell without one stable result.",
                )
            )
    if report.drift is not None:
        result.append(
            Section(
                f"Drift against {report.baseline}",
                ["cell / scenario", "change", "before", "after"],
                [[d["variant"], d["change"], d["before"], d["after"]] for d in report.drift],
                intro="No cell changed class or verdict." if not report.drift else "",
            )
        )
    return result


def _header(report: Report) -> list[str]:
    ok = sum(v.ok_repeats for v in report.variants)
    lines = [
        f"Sources: {', '.join(report.sources)} — {len({v.cell_id for v in report.variants})} cells, "
        f"{len(report.variants)} cell × scenario variants, {ok} measured repeats; generated {report.generated_at}"
    ]
    lines += [f"warning: {w}" for w in report.warnings]
    return lines


def terminal(report: Report) -> str:
    parts = ["repromatrix report", *_header(report)]
    for section in sections(report, pairwise=False):
        parts.append(f"\n== {section.title} ==")
        if section.intro:
            parts.append(section.intro)
        if section.rows:
            parts.append(tabulate(section.rows, section.headers, tablefmt="simple", disable_numparse=True))
    return "\n".join(parts)


def _md_escape(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report, limit: int = MARKDOWN_LIMIT) -> str:
    parts = ["# repromatrix: bit-identity report", "", *(f"{line}  " for line in _header(report))]
    for section in sections(report, pairwise=True):
        block = [f"\n## {section.title}\n"]
        if section.intro:
            block.append(section.intro + "\n")
        if section.rows:
            rows = [[_md_escape(str(c)) for c in row] for row in section.rows]
            block.append(tabulate(rows, section.headers, tablefmt="github", disable_numparse=True))
        candidate = "\n".join(block)
        if sum(len(p) + 1 for p in parts) + len(candidate) > limit:
            parts.append(
                "\n**Truncated** to stay under GitHub's summary limit: the full report is in "
                "`report.html` and `report.json` beside this file."
            )
            break
        parts.append(candidate)
    return "\n".join(parts) + "\n"


def json_report(report: Report) -> str:
    def table_json(table: analysis.ClassTable) -> dict[str, Any]:
        return {
            "scenario": table.scenario,
            "output": table.output,
            "by_cell": table.by_cell,
            "classes": {k: {"sha256": c["sha256"], "cells": c["cells"]} for k, c in table.classes.items()},
            "distances": table.distances,
        }

    payload = {
        "report_schema": analysis.REPORT_SCHEMA,
        "generated_at": report.generated_at,
        "sources": report.sources,
        "warnings": report.warnings,
        "findings": [f.__dict__ for f in report.findings],
        "variants": [
            {
                "cell_id": v.cell_id,
                "cell": v.cell,
                "scenario": v.scenario,
                "variant": v.variant,
                "seed": v.seed,
                "status": v.status,
                "message": v.message,
                "repeats": len(v.records),
                "ok_repeats": v.ok_repeats,
                "run_to_run": v.run_to_run,
                "in_process": v.in_process,
                "ran_on": v.ran_on,
                "expected": v.expected,
                "claim": v.claim,
                "claim_reasons": v.claim_reasons,
                "digests": v.digests,
            }
            for v in report.variants
        ],
        "classes": [table_json(t) for t in report.tables],
        "baseline": report.baseline,
        "drift": report.drift,
        "drift_summary": analysis.summary_for_drift(report.variants),
    }
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def csv_rows(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["cell", "tf", "device", "scenario", "variant", "status", "run_to_run", "ok_repeats", "in_process", "ran_on",
         "claim", "predictions_class", "weights_class", "note"]
    )  # fmt: skip
    classes = {(t.scenario, t.output): t.by_cell for t in report.tables}
    for v in report.variants:
        writer.writerow(
            [
                v.cell_id, v.cell.get("tf", ""), v.cell.get("device", ""), v.scenario, v.variant, v.status,
                v.run_to_run, v.ok_repeats, v.in_process, v.ran_on, v.claim,
                classes.get((v.name, "model1.predictions"), {}).get(v.cell_id, ""),
                classes.get((v.name, "model1.weights"), {}).get(v.cell_id, ""),
                v.message or "; ".join(v.claim_reasons),
            ]
        )  # fmt: skip
    return buffer.getvalue()
