"""The report's sentences: the headline, the word on hosts and on published reports, from the numbers
`analysis` computed (verdicts, findings, attribution).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from repromatrix.harness import axes
from repromatrix.harness.records import Status
from repromatrix.reporting.analysis import (
    Attribution,
    Finding,
    RunToRun,
    Severity,
    Variant,
    is_compared,
    output_order,
)
from repromatrix.reporting.distances import Distance
from repromatrix.reporting.matter import clause, thresholds_line


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def headline(all_variants: list[Variant], found: list[Finding], attributed: list[Attribution],
             hosts: list[dict[str, Any]] | None = None) -> list[str]:  # fmt: skip
    """A few plain sentences, generated from the findings and the attribution."""
    lines = []
    measured = [v for v in all_variants if v.ok_repeats]
    cells = len({v.cell_id for v in measured})
    broken = [f for f in found if f.severity == Severity.FINDING]
    seeded = [v for v in measured if v.seeded and v.run_to_run != RunToRun.UNTESTED]
    # A seeded variant whose run to run could not be judged (one repeat, or one process identity)
    # must not be counted as reproducible.
    untested = [
        v for v in measured if v.expectation.get("run_to_run") == "identical" and v.run_to_run == RunToRun.UNTESTED
    ]
    if broken:
        where = sorted({f.cell_id for f in broken})
        what = sorted({f.scenario for f in broken})
        lines.append(
            f"{len(broken)} expectation{'s' if len(broken) != 1 else ''} broke in {len(where)} of {cells} cells "
            f"({_join(what)}): see Findings."
        )
    elif seeded and untested:
        lines.append(
            f"Every expectation tested held, but run to run was not tested for {len(untested)} seeded "
            f"variant{'s' if len(untested) != 1 else ''} ({untested[0].run_to_run_note}): see the run-to-run table."
        )
    elif seeded:
        lines.append(
            f"Every expectation held: seeded runs were reproducible run to run in every cell ({_cells(measured)}), "
            "and unseeded runs varied as expected."
        )
    elif measured and untested:
        lines.append(
            f"Run to run was not tested in the {cells} cells measured ({untested[0].run_to_run_note}); "
            "only the in-process checks were judged."
        )
    elif measured:
        lines.append(f"Every expectation held in the {cells} cells measured.")
    else:
        lines.append("Nothing was measured: every cell was skipped or failed (see the run-to-run table).")

    stable = [entry for entry in attributed if entry.expected_stable]
    binary = {axis: _is_binary(attributed, axis) for axis in {a.axis for a in attributed}}
    by_transition: dict[tuple[str, str], list[Attribution]] = defaultdict(list)
    for entry in stable:
        by_transition[(entry.axis, entry.transition)].append(entry)
    effects: dict[tuple[str, str], list[Attribution]] = defaultdict(list)
    none: dict[str, list[Attribution]] = defaultdict(list)
    for entry in stable:
        if entry.differ:
            effects[(entry.axis, entry.transition)].append(entry)
        elif entry.pairs:
            none[entry.axis].append(entry)
    clauses = []
    for (axis, transition), _ in sorted(effects.items(), key=lambda kv: -sum(e.differ for e in kv[1])):
        label = axes.axis(axis).label
        if not binary[axis]:
            label += f" {transition}"
        compared = by_transition[(axis, transition)]
        differ, pairs = sum(e.differ for e in compared), sum(e.pairs for e in compared)
        clauses.append(f"{label}: {differ}/{pairs} pairs differ — {_per_output(compared)}")
    if clauses:
        lines.append("What changes the bits, most pairs first:")
        lines += [f"- {clause}" for clause in clauses]
        lines += thresholds_line(stable)
    elif attributed:
        lines.append("No single axis changed the bits of any stable result.")
    quiet = []
    for axis, entries in sorted(none.items()):
        label = axes.axis(axis).label
        if not any(key[0] == axis for key in effects):
            quiet.append(label)
        elif not binary[axis]:
            # An ordered axis that changes the bits somewhere: its transitions that changed nothing are news too.
            quiet += sorted({f"{label} {e.transition}" for e in entries if (axis, e.transition) not in effects})
    if quiet:
        lines.append(f"No effect on any stable result: {_join(quiet)}.")
    unstable_only = sorted(
        axes.axis(a.axis).label
        for a in attributed
        if a.unstable and a.expected_stable and not any(b.pairs for b in attributed if b.axis == a.axis)
    )
    if unstable_only:
        lines.append(f"Not comparable (no stable pair of cells): {_join(sorted(set(unstable_only)))}.")
    failed = sorted({v.cell_id for v in all_variants if v.status == Status.ERROR})
    skipped = sorted({v.cell_id for v in all_variants if v.status == Status.SKIPPED} - set(failed))
    if failed or skipped:
        parts = []
        if failed:
            parts.append(f"{len(failed)} cell{'s' if len(failed) != 1 else ''} had errors")
        if skipped:
            parts.append(f"{len(skipped)} cell{'s' if len(skipped) != 1 else ''} skipped some or all scenario variants")
        lines.append(_join(parts) + "; the run-to-run table says why.")
    if hosts_line(hosts or []):
        lines.append(hosts_line(hosts or []))
    return lines


def _cells(measured: list[Variant]) -> str:
    """'14 cells', or '14 cells, and 14 of the published report' when a report.json is an input."""
    here = len({v.cell_id for v in measured if not v.published})
    published = len({v.cell_id for v in measured if v.published})
    text = f"{here} cell{'s' if here != 1 else ''}"
    return text + (f", and {published} of the published report" if published else "")


def _per_output(compared: list[Attribution]) -> str:
    """Per scenario, the outputs a transition changes and those it never changes:
    'seeded_init-seeded: predictions 7/7 (|Δ| ≤ 2.4e-07, 8 ULP), never its weights (0/7)'."""
    parts = []
    for scenario in sorted({e.scenario for e in compared}):
        entries = sorted(
            (e for e in compared if e.scenario == scenario and e.pairs), key=lambda e: output_order(e.output)
        )
        changed = [e for e in entries if e.differ]
        if not changed:
            continue
        worst = Distance()
        for e in changed:
            worst = worst.worse(e.distance)
        said = _join([f"{e.output.removeprefix('model1.')} {e.differ}/{e.pairs}" for e in changed])
        text = f"{scenario}: {said} ({worst.brief()})"
        never = [e for e in entries if not e.differ]
        if never:
            text += f", never its {_join([e.output.removeprefix('model1.') for e in never])} (0/{never[0].pairs})"
        if clause(changed):
            text += f" — {clause(changed)}"
        parts.append(text)
    return "; ".join(parts)


def _is_binary(attributed: list[Attribution], axis: str) -> bool:
    values = {json.dumps(v) for a in attributed if a.axis == axis for v in (a.from_value, a.to_value)}
    return len(values) <= 2 and axis not in ("tf", "host")


def against_published(all_variants: list[Variant]) -> list[str]:
    """Per published input: of the digests it shares with what was measured here, how many are equal."""
    lines = []
    measured = {(v.cell_id.split("@")[0], v.name): v for v in all_variants if not v.published and v.ok_repeats}
    for source in sorted({v.published for v in all_variants if v.published}):
        equal = differ = 0
        for v in all_variants:
            mine = measured.get((v.cell_id.split("@")[0], v.name))
            if v.published != source or mine is None:
                continue
            for output, digest in v.digests.items():
                if is_compared(output) and digest and mine.digests.get(output):
                    equal += mine.digests[output] == digest
                    differ += mine.digests[output] != digest
        lines.append(
            f"Against the published report {source}: {equal} of {equal + differ} shared digests equal, {differ} differ "
            "(cell × scenario variant × compared output present on both sides)."
        )
    return lines


def hosts_line(hosts: list[dict[str, Any]]) -> str:
    """The headline's word on where it was measured (a published report's host is marked as such)."""
    from repromatrix.harness.hosts import Host, describe

    if not hosts or (len(hosts) == 1 and not hosts[0].get("id")):
        return ""  # records made before hosts were recorded say nothing about theirs

    def named(host: dict[str, Any]) -> str:
        return describe(Host.from_json(host)) + (" — from the published report" if host.get("published") else "")

    if len(hosts) == 1:
        return f"Measured on one host: {named(hosts[0])}."
    return (
        f"Measured on {len(hosts)} hosts: {'; '.join(named(h) for h in hosts)}. Host is an axis: run to run is "
        "judged within each host, and pairs of cells that differ in host alone are attributed to it."
    )
