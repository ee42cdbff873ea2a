"""Read result folders into records; merge several (the fan-out jobs) by cell id.

Anything that is not a valid record is named in a warning and left out: one
corrupt file never stops a report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scenarios import _records


@dataclass(frozen=True)
class Record:
    data: dict[str, Any]
    path: Path

    @property
    def cell_id(self) -> str:
        return str(self.data.get("cell", {}).get("id") or self.path.parent.parent.name)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.cell_id, self.data["scenario"], self.data["variant"], int(self.data["repeat"]))

    @property
    def arrays_path(self) -> Path:
        return self.path.with_suffix(".npz")


def _candidates(folder: Path) -> list[Path]:
    # Layout: <folder>/<cell>/<scenario>-<variant>/<repeat>.json; hidden files are temp files in flight.
    return sorted(p for p in folder.rglob("*.json") if not any(part.startswith(".") for part in p.parts[-3:]))


def load(folders: list[Path]) -> tuple[list[Record], list[str]]:
    """All valid records of the folders, first folder winning a conflict, and the warnings."""
    records: dict[tuple[str, str, str, int], Record] = {}
    warnings: list[str] = []
    conflicts: dict[tuple[Path, str], list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            warnings.append(f"{folder}: not a folder; left out")
            continue
        for path in _candidates(folder):
            try:
                record = Record(_records.read_record(path), path)
            except ValueError as exc:
                warnings.append(f"{path}: {exc}; left out")
                continue
            previous = records.get(record.key)
            if previous is None:
                records[record.key] = record
            elif previous.data != record.data:
                conflicts.setdefault((folder, record.cell_id), []).append(previous.path)
    for (folder, cell_id), earlier in conflicts.items():
        first = earlier[0].parent.parent.parent
        warnings.append(
            f"{folder}: {len(earlier)} records of cell {cell_id} differ from the ones already read from {first}; "
            "kept the first (merge folders of different cells, or give them different --results)"
        )
    return sorted(records.values(), key=lambda r: r.key), warnings
