"""Text renderings: terminal and GitHub Markdown share one list of sections; JSON and CSV.

The order is the reader's: the headline, what broke, what changes the bits,
then the seeded class tables, the unseeded ones, and the per-cell details.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from repromatrix.harness import axes
from repromatrix.harness.records import Status
from repromatrix.reporting import analysis, distances, drift, matter
from repromatrix.reporting.history import rows as history_rows
from repromatrix.reporting.model import Report

# GitHub refuses a step summary over 1 MiB; leave room for what other steps add.
MARKDOWN_LIMIT = 900 * 1024
RUN_TO_RUN_HEADERS = ["cell", "scenario", "status", "run to run", "in-process", "ran on", "isolation", "expectation",
                      "note"]  # fmt: skip


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]
    intro: str = ""
    kind: str = ""  # what the HTML renderer keys its styling on
    collapsed_rows: list[list[str]] | None = None  # HTML: the full table, folded away


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def environment_column(cell_id: str) -> str:
    """The cell id without its TF version: device × recipe × knobs × hardware."""
    return re.sub(r"^tf[^-]+-", "", cell_id)


def header_lines(report: Report) -> list[str]:
    """Where the report comes from, and what it could not read."""
    ok = sum(v.ok_repeats for v in report.variants)
    return [
        f"Sources: {', '.join(report.sources)} — {len({v.cell_id for v in report.variants})} cells, "
        f"{len(report.variants)} cell × scenario variants, {ok} measured repeats; generated {report.generated_at}"
    ]


def _spread(v: analysis.Variant) -> str:
    return "; ".join(
        [f"{s.output.removeprefix('model1.')}: {s.distinct} distinct of {s.processes}, {s.distance.brief()}"
         for s in v.spreads] + ([v.divergence] if v.divergence else [])
    )  # fmt: skip


def run_to_run_rows(report: Report, only_not_held: bool) -> tuple[list[list[str]], int]:
    """One row per cell × scenario variant (a cell skipped whole for one reason: one row); rows held, counted."""
    rows, held = [], 0
    by_cell: dict[str, list[analysis.Variant]] = {}
    for v in report.variants:
        by_cell.setdefault(v.cell_id, []).append(v)
    for cell_id, group in by_cell.items():
        reasons = {v.message for v in group}
        if len(group) > 1 and all(v.status == Status.SKIPPED for v in group) and len(reasons) == 1:
            rows.append([cell_id, f"all {len(group)}", "skipped", "—", "—", "—", "—", "untested", reasons.pop()])
            continue
        for v in group:
            if only_not_held and v.claim == analysis.Claim.HELD and v.status == Status.OK:
                held += 1
                continue
            nothing = "—" if not v.ok_repeats else ""
            run_to_run = nothing or f"{v.run_to_run} ({v.identity_text})"
            note = v.message if v.status != Status.OK else "; ".join(v.claim_reasons) or _spread(v) or v.run_to_run_note
            rows.append([cell_id, v.name, v.status, run_to_run, nothing or v.in_process, v.ran_on or "—",
                         v.isolation or "—", v.claim, note])  # fmt: skip
    return rows, held


def compatibility(report: Report, table: analysis.ClassTable) -> Section:
    cells = {v.cell_id: v for v in report.group(table.scenario)}
    columns = sorted({environment_column(c) for c in table.by_cell})
    versions = sorted({str(cells[c].cell.get("tf", c)) for c in table.by_cell}, key=version_key)
    placed: dict[tuple[str, str], list[str]] = {}
    for cell_id, letter in table.by_cell.items():  # one pass: linear in the cells
        placed.setdefault((str(cells[cell_id].cell.get("tf")), environment_column(cell_id)), []).append(letter)
    rows = [[version, *(",".join(placed.get((version, column), [])) for column in columns)] for version in versions]
    legend = ", ".join(
        f"{letter} = {len(c['cells'])} cell{'s' if len(c['cells']) != 1 else ''}" for letter, c in table.classes.items()
    )
    worst = distances.Distance()
    for v in cells.values():
        for spread in v.spreads:
            if spread.output == table.output:
                worst = worst.worse(spread.distance)
    varies = f"{analysis.VARIES} = repeats differ" + (f" (spread {worst.brief()})" if worst.max_abs is not None else "")
    intro = f"Classes: {legend or 'none'}. {varies}, {analysis.NO_RESULT} = no result."
    if table.tolerance_text():
        intro += " " + table.tolerance_text()
    return Section(f"{table.scenario} · {table.output}", ["TF", *columns], rows, intro=intro, kind="classes")


# Class pairs listed in a distance table; the rest are in report.json.
DISTANCE_ROWS = 12


def distance_section(table: analysis.ClassTable) -> Section:
    """Class pairs, farthest first. A first-divergence sentence every pair shares is said once, above."""
    pairs = sorted(table.pairs, key=lambda p: -(p.distance.max_abs or 0.0))
    sentences = {p.divergence for p in pairs}
    shared = sentences.pop() if len(sentences) == 1 else None
    rows = [
        [f"{p.a}–{p.b}", "" if p.distance.max_abs is None else f"{p.distance.max_abs:.3g}", p.distance.ulp_cell(),
         *([] if shared is not None else [p.divergence]),
         "; ".join(filter(None, [p.distance.note, p.distance.estimated])), p.matter.text() if p.matter else ""]
        for p in pairs[:DISTANCE_ROWS]
    ]  # fmt: skip
    near_zero = any(p.distance.near_zero for p in table.pairs)
    intro = ""
    if shared:
        intro = f"Every pair: {shared}. "
    if len(pairs) > DISTANCE_ROWS:
        intro += f"The {DISTANCE_ROWS} farthest of {len(pairs)} pairs; report.json lists them all. "
    if any(row[2].startswith("rel") for row in rows):
        intro += (
            f"`rel` = the largest |Δ| relative to the largest magnitude, shown where a ULP count (over "
            f"{distances.HUGE_ULP:,}) would only say that signs or magnitudes differ."
        )
    if any(p.distance.sampled for p in table.pairs):
        intro += (
            " Where a record kept only a sample of an array (past its byte budget), |Δ| and ULP are read on that "
            "sample: a lower bound, marked 'estimated'; the classes themselves are always whole-array digests."
        )
    if near_zero:
        intro += (
            f" `*` = the largest ULP gap sits at values below {distances.NEAR_ZERO:g}, where floats are dense: "
            "values of 1e-7 are 524288 ULP apart for a |Δ| of 3e-8, so read |Δ| there."
        )
    return Section(
        f"{table.scenario} · {table.output}: how far apart the classes are",
        [
            "classes",
            "max |Δ|",
            "max ULP",
            *([] if shared is not None else ["first divergence"]),
            "note",
            "does it matter",
        ],
        rows,
        intro=intro.strip(),
    )


def attribution_section(report: Report) -> Section:
    rows = [
        [axes.axis(a.axis).label, a.transition, a.scenario, a.output.removeprefix("model1."),
         f"{a.differ}/{a.pairs}", str(a.unstable), a.distance.brief() if a.differ else "",
         a.matter.text() if a.matter and a.differ else ""]
        for a in sorted(report.attribution, key=lambda a: (-a.differ, a.axis))
        if a.expected_stable and (a.pairs or a.unstable)
    ]  # fmt: skip
    return Section(
        "What changes the bits: pairs of cells that differ in one axis alone",
        [
            "axis",
            "change",
            "scenario",
            "output",
            "differ / pairs",
            "not comparable",
            "largest difference",
            "does it matter",
        ],
        rows,
        intro="A pair counts when both cells gave one stable result; pairs where a side varies run to run or has "
        "no result are counted as not comparable. Variants meant to vary (unseeded) are left out here; "
        "report.json has them too.",
        kind="attribution",
    )


def sections(report: Report, pairwise: bool) -> list[Section]:
    found = [[f.severity.upper(), f.cell_id, f.scenario, f.text] for f in report.findings]
    result = [
        Section("Headline", [], [], intro="\n".join(report.headline), kind="headline"),
        *_what_to_change(report),
        Section(
            "Findings",
            ["kind", "cell", "scenario", "what"],
            found,
            intro="Every expectation held."
            if not found
            else "Each variant is judged against its expectation: seeded ones identical, unseeded ones varying, "
            "unless the scenario declares otherwise (EXPECT).",
            kind="findings",
        ),
    ]
    if report.warnings:
        result.append(Section("Warnings", ["warning"], [[w] for w in report.warnings], kind="warnings"))
    host_lines = report.comparison.lines(report.hosts) if report.comparison else []
    if host_lines:
        result.append(Section("Hosts", [], [], intro="\n".join(host_lines), kind="hosts"))
    if report.attribution:
        result.append(attribution_section(report))
    if report.evidence is not None and matter.spread_rows(report.evidence):
        result.append(Section("Seed-to-seed spread", matter.SPREAD_HEADERS, matter.spread_rows(report.evidence),
                              intro=matter.SPREAD_INTRO, kind="spread"))  # fmt: skip
    if report.explained:  # from where, exactly: the pairs traced, beside what changes the bits
        from repromatrix.reporting import explained

        result += explained.sections(report.explained)
    for table in report.tables:  # seeded variants first (class_tables orders them so)
        result.append(compatibility(report, table))
        if table.pairs:
            result.append(distance_section(table))
    not_held, held = run_to_run_rows(report, only_not_held=True)
    full, _ = run_to_run_rows(report, only_not_held=False)
    result.append(
        Section(
            "Run to run, per cell",
            RUN_TO_RUN_HEADERS,
            not_held,
            intro=f"{held} cell × scenario variants held their expectation and are not listed"
            + ("." if not_held else "; nothing else to show."),
            kind="run-to-run",
            collapsed_rows=full,
        )
    )
    if pairwise:
        for scenario in report.scenarios:
            cells, matrix = analysis.agreement(report.group(scenario))
            if all(x is None for row in matrix for x in row):
                continue  # nothing stable to compare, or too many cells: the class tables say it
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
    if report.timeline:
        result.append(
            Section(
                "History of published runs",
                ["published", "TensorFlow", "cells", "since the run before", "verdict"],
                history_rows(report.timeline),
                intro="Newest first; each run's report.json is kept in history/ beside this page.",
                kind="history",
            )
        )
    if report.drift is not None:
        result.append(
            Section(
                f"Drift against {report.baseline}",
                ["cell / scenario", "change", "before", "after", "does it matter"],
                [[d["variant"], d["change"], d["before"], d["after"], d.get("matter", "")] for d in report.drift],
                intro="No cell changed class or verdict." if not report.drift else "",
            )
        )
    return result


def _what_to_change(report: Report) -> list[Section]:
    """Right after the headline, when advice was asked for (`repromatrix advise`)."""
    if not report.advice:
        return []
    from repromatrix.reporting import advice

    headers, rows, intro = advice.table(report.advice)
    return [Section("What to change", headers, rows, intro=intro, kind="advice")]


def terminal(report: Report) -> str:
    parts = ["repromatrix report", *header_lines(report)]
    for section in sections(report, pairwise=False):
        parts.append(f"\n== {section.title} ==")
        if section.intro:
            parts.append(section.intro)
        if section.rows:
            parts.append(tabulate(section.rows, section.headers, tablefmt="simple", disable_numparse=True))
    return "\n".join(parts)


def _md_escape(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report, limit: int = MARKDOWN_LIMIT, figure: str = "") -> str:
    """The report in GitHub Markdown; `figure`: the at-a-glance picture's file beside it, shown first."""
    parts = ["# repromatrix: bit-identity report", ""]
    if figure:
        parts += [f"![What changes the bits: pairs of cells that differ in one change alone]({figure})", ""]
    parts += [f"{line}  " for line in header_lines(report)]
    for section in sections(report, pairwise=True):
        block = [f"\n## {section.title}\n"]
        if section.kind == "headline":
            first, *rest = report.headline
            lines = [f"**{first}**", ""]
            for line, following in zip(rest, [*rest[1:], ""][: len(rest)], strict=True):
                # A blank line ends a Markdown list; without it the next sentence joins the last item.
                lines += [line, ""] if line.startswith("- ") and not following.startswith("- ") else [line]
            block.append("\n".join(lines) + "\n")
        elif section.intro:
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
            "seeded": table.seeded,
            "by_cell": table.by_cell,
            "classes": {k: {"sha256": c["sha256"], "cells": c["cells"]} for k, c in table.classes.items()},
            "distances": [p.to_json() for p in table.pairs],
            "tolerance_groups": table.tolerance_groups,
            "tolerance_ulp": distances.TOLERANCE_ULP,
        }

    payload = {
        "report_schema": analysis.REPORT_SCHEMA,
        "generated_at": report.generated_at,
        "sources": report.sources,
        "headline": report.headline,
        "expectations_broken": report.expectations_broken,
        "warnings": report.warnings,
        "left_out_of_plan": report.left_out_of_plan,
        "hosts": report.hosts,
        "host_comparison": report.comparison.to_json() if report.comparison else None,
        "findings": [f.to_json() for f in report.findings],
        "attribution": [a.to_json() for a in report.attribution],
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
                "run_to_run_note": v.run_to_run_note,
                **({"first_divergence": v.divergence} if v.divergence else {}),
                "identities": v.identities,
                "identity_text": v.identity_text,
                "in_process": v.in_process,
                "ran_on": v.ran_on,
                "isolation": v.isolation,
                "expected": v.expectation,
                "declared": v.declared,
                "claim": v.claim,
                "claim_reasons": v.claim_reasons,
                "spreads": [
                    {"output": s.output, "distinct": s.distinct, "processes": s.processes, **s.distance.to_json()}
                    for s in v.spreads
                ],
                "digests": v.digests,
            }
            for v in report.variants
        ],
        "classes": [table_json(t) for t in report.tables],
        "baseline": report.baseline,
        "drift": report.drift,
        "timeline": report.timeline,
        "drift_summary": drift.summary_for_drift(report.variants),
        "seed_spread": [
            s.to_json() for per in (report.evidence.spreads.values() if report.evidence else []) for s in per.values()
        ],
        "matter_thresholds": {
            "bit_level": matter.BIT_LEVEL,
            "material": matter.MATERIAL,
            "text": matter.THRESHOLDS_TEXT,
        },
        "advice": [a.to_json() for a in report.advice],
        "explained": [e.to_json() for e in report.explained],
    }
    return json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"


def csv_rows(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    outputs = sorted({t.output for t in report.tables}, key=analysis.output_order)
    present = {k for v in report.variants for k in v.cell if k != "id"}
    columns = [name for name in axes.NAMES if name in present]
    columns += sorted(present - set(columns))
    writer.writerow(
        ["cell", *columns, "scenario", "variant", "status", "run_to_run", "ok_repeats", "in_process", "ran_on",
         "isolation", "expectation", *(f"{o.removeprefix('model1.')}_class" for o in outputs), "note"]
    )  # fmt: skip
    classes = {(t.scenario, t.output): t.by_cell for t in report.tables}
    for v in report.variants:
        writer.writerow(
            [v.cell_id, *(v.cell.get(a, "") for a in columns), v.scenario, v.variant, v.status, v.run_to_run,
             v.ok_repeats, v.in_process, v.ran_on, v.isolation, v.claim,
             *(classes.get((v.name, o), {}).get(v.cell_id, "") for o in outputs),
             v.message or "; ".join(v.claim_reasons) or _spread(v)]
        )  # fmt: skip
    return buffer.getvalue()
