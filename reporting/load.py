"""Read result folders into records; merge several (the fan-out jobs, several hosts) by host and cell id.

A label is a host (reporting/hostid.py): folders of two labels are two hosts, whatever their CPUs.
Two folders of one label and one cell are that host measured twice: their repeats pool (nothing is
dropped; run to run is judged over all of them) and `Loading.notes` says so. A folder given twice
is read once, and a record found again in another folder (a copied folder) counts once.

Anything that is not a valid record — unparseable, malformed, or with arrays
that do not load or do not match its digests — is named in a warning and left
out: one damaged file never stops a report. Records outside the folder's
last plan (repeats or scenarios since dropped) are left out and counted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repromatrix.harness import records
from repromatrix.harness.catalog import default_expectation
from repromatrix.harness.layout import Layout, Manifest
from repromatrix.reporting import hostid


@dataclass(frozen=True)
class Loaded:
    """A valid record, where it lives, and the cell it belongs to."""

    record: records.Record
    path: Path
    cell_id: str
    folder: str = ""  # the results folder it was read from, as given

    @property
    def key(self) -> tuple[str, str, str, str, str, int]:
        """Where a measurement belongs: the same cell measured on two hosts (two labels) is two measurements;
        one host's repeat r measured in two folders is two repeats of one host (`load` keeps both)."""
        label, host_id = hostid.key_of(self.record.host)
        return (label, host_id, self.cell_id, self.record.scenario, self.record.variant, self.record.repeat)

    @property
    def arrays_path(self) -> Path:
        return records.arrays_path(self.path)

    @property
    def expectation(self) -> dict[str, str]:
        return {**default_expectation(self.record.variant), **self.record.expect}

    def arrays(self) -> dict[str, Any]:
        return records.load_arrays(self.arrays_path)


@dataclass(frozen=True)
class Published:
    """A published report.json given as an input: its hosts and its variants' digests and verdicts."""

    path: Path
    hosts: list[dict[str, Any]]
    variants: list[dict[str, Any]]


# Report schemas whose variants carry what a comparison needs (cell, digests, verdicts).
PUBLISHED_SCHEMAS = (2,)


def read_published(path: Path) -> Published:
    """A report.json, or RecordError saying why it cannot stand beside results folders."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise records.RecordError(f"{path}: not a readable report.json ({exc})") from None
    if not isinstance(raw, dict) or raw.get("report_schema") not in PUBLISHED_SCHEMAS:
        schema = raw.get("report_schema") if isinstance(raw, dict) else None
        raise records.RecordError(
            f"{path}: not a repromatrix report.json of schema {PUBLISHED_SCHEMAS[-1]} (schema {schema!r}); "
            "regenerate it with `repromatrix report`"
        )
    variants = [
        v for v in raw.get("variants") or [] if isinstance(v, dict) and {"cell_id", "scenario", "variant"} <= set(v)
    ]
    return Published(path, list(raw.get("hosts") or []), variants)


@dataclass
class Loading:
    records: list[Loaded] = field(default_factory=list)
    # Spread runs (the variant with other seeds): only reporting/matter.py reads them, never a verdict.
    spread: list[Loaded] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    left_out_of_plan: int = 0
    notes: list[str] = field(default_factory=list)  # what the merge did that is no problem: pooling, copies


def _read(path: Path, cell_id: str, verifications: records.Verifications, folder: str = "") -> Loaded:
    record = records.Record.read(path)
    if record.is_ok:
        verifications.check(record, path)
    if record.cell_id and record.cell_id != cell_id:
        raise records.RecordError(f"belongs to cell {record.cell_id}, not to the folder it is in")
    if not record.cell:
        record = record.with_cell({"id": cell_id})
    return Loaded(record, path, cell_id, folder)


def _distinct(folders: list[Path]) -> list[Path]:
    """The folders in the order given, each once (the same folder given twice, or by two paths, is read once)."""
    seen: set[Path] = set()
    kept = []
    for folder in folders:
        resolved = folder.resolve()
        if resolved not in seen:
            seen.add(resolved)
            kept.append(folder)
    return kept


def load(folders: list[Path]) -> Loading:
    """All valid records of the folders (none dropped because folders look alike), the warnings and notes;
    spread runs kept apart from the repeats."""
    found: dict[tuple[str, str, str, str, str, int], list[Loaded]] = {}
    spread: dict[tuple[str, str, str, str, str, int | None], Loaded] = {}
    loading = Loading()
    copies: dict[tuple[str, str], int] = defaultdict(int)  # (folder, folder it repeats) → records
    for folder in _distinct(folders):
        if folder.is_file():
            try:
                loading.published.append(read_published(folder))
            except records.RecordError as exc:
                loading.warnings.append(f"{exc}; left out")
            continue
        if not folder.is_dir():
            loading.warnings.append(f"{folder}: not a folder or report.json; left out")
            continue
        manifest = Manifest.read(Layout(folder).manifest)
        for cell_id, cell in Layout(folder).cells():
            verifications = records.Verifications.of(cell)
            for path in cell.record_files():
                try:
                    loaded = _read(path, cell_id, verifications, str(folder))
                except records.RecordError as exc:
                    loading.warnings.append(f"{path}: {exc}; left out (the next run measures it again)")
                    continue
                spread_seed = loaded.record.seed if loaded.record.spread else None
                if not manifest.plans(loaded.record.scenario, loaded.record.variant, loaded.record.repeat,
                                      spread_seed):  # fmt: skip
                    loading.left_out_of_plan += 1
                    continue
                if loaded.record.spread:  # kept apart: never a repeat of its variant
                    spread.setdefault((*loaded.key[:5], spread_seed), loaded)
                    continue
                same = found.setdefault(loaded.key, [])
                twin = next((r for r in same if r.record == loaded.record), None)
                if twin is not None:  # the very same measurement, found again in a copy of a folder
                    copies[(str(folder), twin.folder)] += 1
                    continue
                same.append(loaded)
            verifications.save()
    for (again, first), count in copies.items():
        loading.notes.append(
            f"{again}: {count} record{'s' if count != 1 else ''} equal to ones already read from {first} "
            "(a copy of the same measurement) counted once"
        )
    loading.notes += pooled(item for group in found.values() for item in group)
    if loading.left_out_of_plan:
        loading.warnings.append(
            f"{loading.left_out_of_plan} records outside the folder's last plan (repeats or scenario variants it "
            "no longer runs) were left out"
        )
    loading.records = sorted((item for group in found.values() for item in group), key=lambda r: (r.key, r.folder))
    loading.spread = [spread[key] for key in sorted(spread, key=str)]
    return loading


def pooled(loaded: Iterable[Loaded]) -> list[str]:
    """One note per host × cell measured in more than one folder: its repeats were pooled."""
    folders: dict[tuple[hostid.HostKey, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in loaded:  # one label on two machines is two hosts (hostid.py): never pooled, never said so
        folders[(hostid.key_of(item.record.host), item.cell_id)][item.folder] += 1
    notes = []
    for ((label, _), cell_id), counts in sorted(folders.items()):
        label = label or hostid.UNKNOWN_HOST
        if len(counts) < 2:
            continue
        parts = " + ".join(f"{n} from {folder}" for folder, n in counts.items())
        notes.append(
            f"host {label}, cell {cell_id}: {sum(counts.values())} records pooled ({parts}): one host measured "
            "more than once (one label); run to run is judged over all of them"
        )
    return notes
