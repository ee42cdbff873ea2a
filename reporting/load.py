"""Read result folders into records; merge several (the fan-out jobs) by cell id.

Anything that is not a valid record — unparseable, malformed, or with arrays
that do not load or do not match its digests — is named in a warning and left
out: one damaged file never stops a report. Records outside the folder's
last plan (repeats or scenarios since dropped) are left out and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repromatrix.harness import records
from repromatrix.harness.catalog import default_expectation
from repromatrix.harness.layout import Layout, Manifest


@dataclass(frozen=True)
class Loaded:
    """A valid record, where it lives, and the cell it belongs to."""

    record: records.Record
    path: Path
    cell_id: str

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        """The identity of a measurement: the same cell measured on two hosts is two measurements."""
        return (self.record.host_id, self.cell_id, self.record.scenario, self.record.variant, self.record.repeat)

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


def _read(path: Path, cell_id: str, verifications: records.Verifications) -> Loaded:
    record = records.Record.read(path)
    if record.is_ok:
        verifications.check(record, path)
    if record.cell_id and record.cell_id != cell_id:
        raise records.RecordError(f"belongs to cell {record.cell_id}, not to the folder it is in")
    if not record.cell:
        record = record.with_cell({"id": cell_id})
    return Loaded(record, path, cell_id)


def load(folders: list[Path]) -> Loading:
    """All valid records of the folders, first folder winning a conflict, and the warnings."""
    found: dict[tuple[str, str, str, str, int], Loaded] = {}
    spread: dict[tuple[str, str, str, str, int | None], Loaded] = {}
    loading = Loading()
    conflicts: dict[tuple[Path, str], list[Path]] = {}
    for folder in folders:
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
                    loaded = _read(path, cell_id, verifications)
                except records.RecordError as exc:
                    loading.warnings.append(f"{path}: {exc}; left out (the next run measures it again)")
                    continue
                spread_seed = loaded.record.seed if loaded.record.spread else None
                if not manifest.plans(loaded.record.scenario, loaded.record.variant, loaded.record.repeat,
                                      spread_seed):  # fmt: skip
                    loading.left_out_of_plan += 1
                    continue
                if loaded.record.spread:  # kept apart: never a repeat of its variant
                    spread.setdefault((*loaded.key[:4], spread_seed), loaded)
                    continue
                previous = found.get(loaded.key)
                if previous is None:
                    found[loaded.key] = loaded
                elif previous.record != loaded.record:
                    conflicts.setdefault((folder, cell_id), []).append(previous.path)
            verifications.save()
    for (folder, cell_id), earlier in conflicts.items():
        first = earlier[0].parent.parent.parent
        loading.warnings.append(
            f"{folder}: {len(earlier)} records of cell {cell_id} differ from the ones already read from {first}; "
            "kept the first (merge folders of different cells, or give them different --results)"
        )
    if loading.left_out_of_plan:
        loading.warnings.append(
            f"{loading.left_out_of_plan} records outside the folder's last plan (repeats or scenario variants it "
            "no longer runs) were left out"
        )
    loading.records = sorted(found.values(), key=lambda r: r.key)
    loading.spread = [spread[key] for key in sorted(spread, key=str)]
    return loading
