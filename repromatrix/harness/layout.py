"""The results folder: one subfolder per cell, one per scenario variant, a record per repeat.

`<results>/<cell id>/<scenario>-<variant>/<repeat>.{json,npz}`, the manifest saying what made
the folder, and the hidden files a run keeps beside the records (its lock, the attempts' plan, summary and
lease files, the verification memo). The only owner of those names. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPREAD_PREFIX = "spread-"


@dataclass(frozen=True)
class Manifest:
    """What made a results folder: the backend, and the plan (cells accumulate across narrowed runs;
    scenario variants and repeats are the latest run's), so the reporter counts only what is planned."""

    backend: str = ""
    cells: frozenset[str] = frozenset()
    variants: frozenset[tuple[str, str]] = frozenset()
    repeats: int = 0
    host: dict[str, Any] = field(default_factory=dict, hash=False)  # the machine whose records these are
    spread: frozenset[tuple[str, str, int]] = frozenset()  # spread runs planned: (scenario, variant, seed)

    def plans(self, scenario: str, variant: str, repeat: int, spread_seed: int | None = None) -> bool:
        """Whether the folder's last plan has this repeat (a folder without a plan plans everything)."""
        if spread_seed is not None:
            return not self.repeats or (scenario, variant, spread_seed) in self.spread
        return not self.repeats or ((scenario, variant) in self.variants and repeat < self.repeats)

    def to_json(self) -> dict[str, Any]:
        plan = {"cells": sorted(self.cells), "variants": sorted(self.variants), "repeats": self.repeats}
        if self.spread:
            plan["spread"] = sorted(self.spread)
        return {"backend": self.backend, "plan": plan, "host": self.host}

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """The manifest, or an empty one when the folder has none (or an unreadable one)."""
        try:
            raw = json.loads(path.read_text())
            plan = raw.get("plan") or {}
            return cls(
                backend=str(raw.get("backend") or ""),
                cells=frozenset(str(c) for c in plan.get("cells", [])),
                variants=frozenset((str(s), str(v)) for s, v in plan.get("variants", [])),
                spread=frozenset((str(s), str(v), int(seed)) for s, v, seed in plan.get("spread", [])),
                repeats=int(plan.get("repeats", 0)),
                host=raw.get("host") if isinstance(raw.get("host"), dict) else {},
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return cls()


@dataclass(frozen=True)
class CellLayout:
    """One cell's folder: `<cell>/<scenario>-<variant>/<repeat>.{json,npz}`, plus the attempts' files.

    The harness sees only this folder (a container mounts it as /results).
    """

    root: Path

    def record(self, scenario: str, variant: str, repeat: int, spread_seed: int | None = None) -> Path:
        """A repeat's record; a spread run's (the variant with another seed) is `spread-<seed>.json` beside them."""
        name = f"{repeat}.json" if spread_seed is None else f"{SPREAD_PREFIX}{spread_seed}.json"
        return self.root / f"{scenario}-{variant}" / name

    @property
    def verified_file(self) -> Path:
        return self.root / ".verified.json"

    def attempt_dir(self, attempt: str) -> Path:
        # Hidden: the reporter and merges never read it.
        return self.root / ".attempts" / attempt

    def plan_file(self, attempt: str) -> Path:
        return self.attempt_dir(attempt) / "plan.json"

    def summary_file(self, attempt: str) -> Path:
        return self.attempt_dir(attempt) / "summary.json"

    def lease_file(self, attempt: str) -> Path:
        """Held by the runner while the attempt runs (scenarios/lease.py)."""
        return self.attempt_dir(attempt) / "lease"

    def temporary_files(self) -> Iterator[Path]:
        """Half-written files of the atomic writes (`.NAME.<random>.tmp`, `.tmp.npz`): a run that died left them."""
        if not self.root.is_dir():
            return
        for folder in [self.root, *(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))]:
            for path in folder.glob(".*.tmp*"):
                if path.name.endswith((".tmp", ".tmp.npz")):
                    yield path

    def record_files(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for variant_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(variant_dir.glob("*.json"), key=lambda p: (len(p.stem), p.stem)):
                if not path.name.startswith("."):
                    yield path


@dataclass(frozen=True)
class Layout:
    """A results folder: one subfolder per cell, named by the cell id."""

    root: Path
    MANIFEST = "repromatrix-results.json"
    LOCK = ".repromatrix.lock"

    def cell(self, cell_id: str) -> CellLayout:
        return CellLayout(self.root / cell_id)

    @property
    def manifest(self) -> Path:
        return self.root / self.MANIFEST

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK

    def explain_runs(self, pair: str) -> Path:
        """Where `matrix --explain` re-runs one pair, untraced and traced: a results folder of its own, in a
        dot-folder, which `cells()` passes over, so the matrix's report never reads its records."""
        return self.root / ".explain" / pair

    def cells(self) -> Iterator[tuple[str, CellLayout]]:
        if not self.root.is_dir():
            return
        for path in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            yield path.name, CellLayout(path)

    def record_files(self) -> Iterator[tuple[str, Path]]:
        """(cell id from the folder name, record path) for every record file in the folder."""
        for cell_id, cell in self.cells():
            for path in cell.record_files():
                yield cell_id, path
