"""What the runner, the harness and a scenario process hand each other, as files in an attempt folder.

The runner writes the plan (the repeats to measure, `RepeatSpec`), the harness hands each scenario
process its spec and writes back a `Summary` after every repeat. Never stdout, which is for people.
Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .fileio import write_json
from .records import DEFAULT_RECORD_BYTES


@dataclass(frozen=True)
class RepeatSpec:
    """One repeat to measure: what the runner plans, and what the harness hands a scenario process.

    Its first fields are the record's own, so a record (ok or error) is made from it directly.
    """

    scenario: str
    variant: str
    seed: int | None
    repeat: int
    cell: dict[str, Any] = field(default_factory=dict)
    reuse_key: str | None = None
    expect: dict[str, str] = field(default_factory=dict)
    isolation: str = "process"
    record_bytes: int = DEFAULT_RECORD_BYTES  # what the record may keep of its arrays whole
    host: dict[str, Any] = field(default_factory=dict)  # the machine measuring it (scenarios/hosts.py)
    problem: str = ""  # why this repeat cannot run (unknown or broken scenario): it becomes an error record
    # Filled in by the harness for the scenario process:
    record: str = ""  # where the record goes
    knobs: dict[str, Any] = field(default_factory=dict)
    image: dict[str, Any] = field(default_factory=dict)
    fork_parent: str = ""
    lease: str = ""  # the attempt's lease, checked just before the record is written (scenarios/lease.py)

    @property
    def label(self) -> str:
        return f"{self.scenario}-{self.variant} #{self.repeat}"

    def record_fields(self) -> dict[str, Any]:
        """What a record of this repeat says about it, whatever its outcome."""
        names = ("scenario", "variant", "seed", "repeat", "cell", "reuse_key", "expect", "isolation", "host")
        return {name: getattr(self, name) for name in names}

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RepeatSpec:
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


def write_plan(path: Path, specs: list[RepeatSpec]) -> None:
    write_json(path, {"repeats": [spec.to_json() for spec in specs]})


def read_plan(path: Path) -> list[RepeatSpec]:
    return [RepeatSpec.from_json(raw) for raw in json.loads(path.read_text())["repeats"]]


@dataclass
class Summary:
    """What one harness call did; written to the attempt folder after every repeat, for the runner."""

    attempt: str = ""
    planned: int = 0
    started: int = 0
    ok: int = 0
    error: int = 0
    skipped: int = 0
    reused: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # labels of the repeats it wrote a record for
    finished: bool = False

    def write(self, path: Path | None) -> None:
        if path is not None:
            write_json(path, self.__dict__)

    @classmethod
    def read(cls, path: Path) -> Summary | None:
        try:
            raw = json.loads(path.read_text())
            return cls(**{key: raw[key] for key in cls.__dataclass_fields__ if key in raw})
        except (OSError, ValueError, TypeError):
            return None
