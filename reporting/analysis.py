"""Comparison semantics: run-to-run verdicts, equivalence classes, distances, expectations, drift.

Pure logic over loaded records (and their npz files, for distances only), so
it is tested on hand-made records.
"""

from __future__ import annotations

import json
import string
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from reporting.load import Record

REPORT_SCHEMA = 1
# Cross-environment classes compare the first build; model2 is its in-process twin.
COMPARED_OUTPUTS = ("model1.predictions", "model1.weights")
VARIES = "~"
NO_RESULT = "—"


@dataclass
class Variant:
    """One cell × scenario variant: its repeats and what they say."""

    cell_id: str
    cell: dict[str, Any]
    scenario: str
    variant: str
    seed: int | None
    records: list[Record]
    status: str = "ok"  # ok, error, skipped
    message: str = ""
    ok_repeats: int = 0
    run_to_run: str = "untested"  # identical, varies, untested (fewer than 2 measured repeats)
    in_process: str = "untested"  # identical, differs, mixed, untested
    ran_on: str = ""  # cpu, gpu, mixed; empty when nothing ran
    digests: dict[str, str | None] = field(default_factory=dict)  # per output, None when repeats disagree
    claim: str = "untested"  # held, broken, untested
    claim_reasons: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.scenario}-{self.variant}"

    @property
    def expected(self) -> str:
        return "identical" if self.variant == "seeded" else "varies"

    @property
    def representative(self) -> Record | None:
        return next((r for r in self.records if r.data["status"] == "ok"), None)


def _summarise(variant: Variant) -> None:
    statuses = [r.data["status"] for r in variant.records]
    ok = [r for r in variant.records if r.data["status"] == "ok"]
    variant.ok_repeats = len(ok)
    failed = next((r for r in variant.records if r.data["status"] != "ok"), None)
    if "error" in statuses:
        variant.status = "error"
    elif ok:
        variant.status = "ok"
    else:
        variant.status = "skipped"
    if failed is not None:
        variant.message = str((failed.data.get("error") or {}).get("message") or failed.data["status"])
    if not ok:
        return
    outputs = sorted({name for r in ok for name in r.data.get("outputs", {})})
    for name in outputs:
        seen = {r.data["outputs"].get(name, {}).get("sha256") for r in ok}
        variant.digests[name] = seen.pop() if len(seen) == 1 else None
    if len(ok) >= 2:
        variant.run_to_run = "identical" if all(d is not None for d in variant.digests.values()) else "varies"
    checks = {r.data.get("in_process_identical") for r in ok}
    variant.in_process = (
        "mixed" if len(checks) > 1 else {True: "identical", False: "differs"}.get(checks.pop(), "untested")
    )
    devices = {(r.data.get("environment") or {}).get("ran_on", "cpu") for r in ok}
    variant.ran_on = devices.pop() if len(devices) == 1 else "mixed"
    _judge(variant)


def _judge(variant: Variant) -> None:
    """The article's claims as expectations: seeded is identical, unseeded varies."""
    reasons = []
    if variant.variant == "seeded":
        if variant.in_process in ("differs", "mixed"):
            reasons.append("seeded: model1 and model2 differ in-process")
        if variant.run_to_run == "varies":
            reasons.append(f"seeded: repeats differ run to run ({variant.ok_repeats} processes)")
    else:
        if variant.in_process in ("identical", "mixed"):
            reasons.append("unseeded: model1 and model2 came out identical in-process")
        if variant.run_to_run == "identical":
            reasons.append("unseeded: every process gave the very same bits (something seeds it)")
    variant.claim_reasons = reasons
    tested = variant.in_process != "untested" or variant.run_to_run != "untested"
    variant.claim = "broken" if reasons else ("held" if tested else "untested")


def variants(records: list[Record]) -> list[Variant]:
    grouped: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for record in records:
        grouped[(record.cell_id, record.data["scenario"], record.data["variant"])].append(record)
    found = []
    for (cell_id, scenario, variant_name), group in sorted(grouped.items()):
        group.sort(key=lambda r: int(r.data["repeat"]))
        first = group[0].data
        variant = Variant(
            cell_id, first.get("cell") or {"id": cell_id}, scenario, variant_name, first.get("seed"), group
        )
        _summarise(variant)
        found.append(variant)
    return found


@dataclass(frozen=True)
class Finding:
    severity: str  # finding (an expectation broken), warning, error
    cell_id: str
    scenario: str
    text: str


def findings(all_variants: list[Variant]) -> list[Finding]:
    """Everything a reader must not miss, seeded-but-varies first."""
    found = []
    for v in all_variants:
        for reason in v.claim_reasons:
            found.append(Finding("finding", v.cell_id, v.name, reason))
        if v.cell.get("device") == "cuda" and v.ran_on and v.ran_on != "gpu":
            found.append(
                Finding("warning", v.cell_id, v.name, f"requested CUDA but ran on {v.ran_on}: not a GPU result")
            )
        if v.status == "error":
            found.append(Finding("error", v.cell_id, v.name, v.message))
    rank = {"finding": 0, "warning": 1, "error": 2}
    return sorted(found, key=lambda f: (rank[f.severity], not f.scenario.endswith("-seeded"), f.cell_id, f.scenario))


def _letters(index: int) -> str:
    letters = string.ascii_uppercase
    name = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        name = letters[remainder] + name
    return name


@dataclass
class ClassTable:
    """Cells grouped by the exact bits of one output of one scenario variant."""

    scenario: str
    output: str
    by_cell: dict[str, str]  # cell id → class letter, VARIES or NO_RESULT
    classes: dict[str, dict[str, Any]]  # letter → {"sha256", "cells", "representative"}
    distances: list[dict[str, Any]] = field(default_factory=list)


def class_tables(all_variants: list[Variant]) -> list[ClassTable]:
    by_scenario: dict[str, list[Variant]] = defaultdict(list)
    for v in all_variants:
        by_scenario[v.name].append(v)
    tables = []
    for scenario, group in sorted(by_scenario.items()):
        for output in COMPARED_OUTPUTS:
            by_cell: dict[str, str] = {}
            classes: dict[str, dict[str, Any]] = {}
            letter_of: dict[str, str] = {}
            for v in group:
                if not v.ok_repeats or output not in v.digests:
                    by_cell[v.cell_id] = NO_RESULT
                    continue
                digest = v.digests[output]
                if digest is None:
                    by_cell[v.cell_id] = VARIES
                    continue
                if digest not in letter_of:
                    letter_of[digest] = _letters(len(letter_of))
                    classes[letter_of[digest]] = {"sha256": digest, "cells": [], "representative": v.representative}
                classes[letter_of[digest]]["cells"].append(v.cell_id)
                by_cell[v.cell_id] = letter_of[digest]
            tables.append(ClassTable(scenario, output, by_cell, classes))
    return tables


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Largest number of representable floats between matching elements."""
    if a.dtype != b.dtype or a.dtype.kind != "f":
        raise TypeError(f"ULP distance needs two float arrays of one dtype, got {a.dtype} and {b.dtype}")
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x: np.ndarray) -> np.ndarray:
        # Map IEEE bit patterns onto a line where adjacent floats are adjacent integers (-0 == +0).
        raw = x.view(bits).astype(object) if bits is np.int64 else x.view(bits).astype(np.int64)
        low = -(2 ** (8 * a.dtype.itemsize - 1))
        return np.where(raw < 0, low - raw, raw)

    if a.size == 0:
        return 0
    return int(np.max(np.abs(ordered(a.ravel()) - ordered(b.ravel()))))


def distance(left: Record, right: Record, output: str) -> dict[str, Any]:
    try:
        with np.load(left.arrays_path) as la, np.load(right.arrays_path) as ra:
            a, b = la[output], ra[output]
    except (OSError, KeyError, ValueError) as exc:
        return {"max_abs": None, "max_ulp": None, "note": f"arrays unreadable: {exc}"}
    if a.shape != b.shape:
        return {"max_abs": None, "max_ulp": None, "note": f"shapes differ: {a.shape} vs {b.shape}"}
    if a.dtype != b.dtype:
        return {"max_abs": None, "max_ulp": None, "note": f"dtypes differ: {a.dtype} vs {b.dtype}"}
    max_abs = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
    return {"max_abs": max_abs, "max_ulp": ulp_distance(a, b), "note": ""}


def add_distances(tables: list[ClassTable], limit: int = 12) -> None:
    """Max |Δ| and max ULP between each pair of classes (the first `limit` classes of a table)."""
    for table in tables:
        letters = list(table.classes)[:limit]
        for x, y in combinations(letters, 2):
            left, right = table.classes[x]["representative"], table.classes[y]["representative"]
            table.distances.append({"a": x, "b": y, **distance(left, right, table.output)})


def pairwise(group: list[Variant]) -> tuple[list[str], list[list[float | None]]]:
    """Share of compared outputs two cells agree on bit for bit (None: one has no stable result).

    Cells that measured nothing (skipped, failed) are left out.
    """
    group = [v for v in group if v.ok_repeats]
    cells = [v.cell_id for v in group]
    matrix: list[list[float | None]] = []
    for left in group:
        row: list[float | None] = []
        for right in group:
            names = sorted(set(left.digests) & set(right.digests))
            if not names or any(left.digests[n] is None or right.digests[n] is None for n in names):
                row.append(None)
            else:
                row.append(sum(left.digests[n] == right.digests[n] for n in names) / len(names))
        matrix.append(row)
    return cells, matrix


def summary_for_drift(all_variants: list[Variant]) -> dict[str, dict[str, Any]]:
    return {
        f"{v.cell_id}/{v.name}": {"status": v.status, "run_to_run": v.run_to_run, "digests": v.digests}
        for v in all_variants
    }


def load_baseline(path: Path) -> dict[str, dict[str, Any]]:
    """A report.json (its "drift_summary") or a results folder."""
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("report_schema") != REPORT_SCHEMA:
                raise ValueError(f"report_schema {data.get('report_schema')!r}, expected {REPORT_SCHEMA}")
            return dict(data["drift_summary"])
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"baseline {path}: not a repromatrix report.json ({exc})") from None
    from reporting.load import load

    records, _ = load([path])
    if not records:
        raise ValueError(f"baseline {path}: no records found")
    return summary_for_drift(variants(records))


def drift(current: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Which cell × scenario variants changed verdict or bits since the baseline."""
    changes = []
    for key in sorted(set(current) | set(baseline)):
        now, before = current.get(key), baseline.get(key)
        if before is None:
            changes.append({"variant": key, "change": "new", "before": "", "after": now["run_to_run"]})
        elif now is None:
            changes.append({"variant": key, "change": "gone", "before": before["run_to_run"], "after": ""})
        else:
            if now["status"] != before["status"]:
                changes.append({"variant": key, "change": "status", "before": before["status"], "after": now["status"]})
            if now["run_to_run"] != before["run_to_run"]:
                changes.append(
                    {"variant": key, "change": "verdict", "before": before["run_to_run"], "after": now["run_to_run"]}
                )
            for output in sorted(set(now["digests"]) & set(before["digests"])):
                a, b = before["digests"][output], now["digests"][output]
                if a and b and a != b:
                    changes.append({"variant": key, "change": f"bits of {output}", "before": a[:12], "after": b[:12]})
    return changes
