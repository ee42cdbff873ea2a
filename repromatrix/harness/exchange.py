"""What the runner, the harness and a scenario process hand each other, as files in an attempt folder.

The runner writes the `Plan` of one attempt — the whole contract: the cell, its knobs, the
environment and host the records name, the isolation, the timeout, and the repeats to measure
(`RepeatSpec`); the harness hands each scenario process its spec and writes back a `Summary` after
every repeat. Never stdout, which is for people. Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .axes import Knobs
from .fileio import write_json
from .hosts import Host
from .records import DEFAULT_ISOLATION, DEFAULT_RECORD_BYTES, DEFAULT_TIMEOUT_S, Isolation

# The harness's exit code when the results folder has no room left: it wrote nothing of the failed
# repeat, and the runner says so once, for the whole run.
RESULTS_FULL = 74
# A spread run not needed: the scenario's unseeded variant measured the spread in this cell. Its skipped
# record carries the reuse key, so a later run reuses it rather than asking again.
SIBLING_STANDS_IN = "not run: the {sibling} variant's repeats measure the seed-to-seed spread in this cell"


def spread_label(scenario: str, variant: str, repeat: int, spread_seed: int | None) -> str:
    """How progress lines and summaries name a repeat: `init-unseeded #0`, or `cnn_training-seeded seed 43`."""
    return f"{scenario}-{variant} " + (f"#{repeat}" if spread_seed is None else f"seed {spread_seed}")


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
    isolation: Isolation = Isolation.PROCESS
    record_bytes: int = DEFAULT_RECORD_BYTES  # what the record may keep of its arrays whole
    host: Host = field(default_factory=Host)  # the machine measuring it
    problem: str = ""  # why this repeat cannot run (unknown or broken scenario): it becomes an error record
    spread: bool = False  # a spread run: the variant with another seed (records.Record.spread)
    decision: dict[str, float] = field(default_factory=dict)  # the scenario's DECISION, for the report
    # A spread run that the scenario's unseeded variant stands in for: run only where that variant's
    # repeat 0 has no measured record in the cell (TF refuses unseeded ops under op determinism).
    sibling: str = ""
    # A command scenario (harness/command.py): the command, and the staged project folder it runs from.
    command: tuple[str, ...] = ()
    project: str = ""
    # Filled in by the harness for the scenario process:
    record: str = ""  # where the record goes
    knobs: Knobs = field(default_factory=Knobs)
    # What oneDNN said it dispatches to under these knobs (the harness's probe), where it was asked.
    onednn_isa: str | None = None
    image: dict[str, Any] = field(default_factory=dict)
    fork_parent: str = ""
    lease: str = ""  # the attempt's lease, checked just before the record is written (lease.py)
    trace: bool = False  # record step-level weights and every op's output beside the record (trace.py)

    @property
    def label(self) -> str:
        return spread_label(self.scenario, self.variant, self.repeat, self.seed if self.spread else None)

    def record_fields(self) -> dict[str, Any]:
        """What a record of this repeat says about it, whatever its outcome."""
        names = ("scenario", "variant", "seed", "repeat", "cell", "reuse_key", "expect", "isolation", "host",
                 "spread", "decision")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def to_json(self) -> dict[str, Any]:
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**raw, "host": self.host.to_json(), "knobs": self.knobs.to_json()}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RepeatSpec:
        spec = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        return replace(spec, host=Host.from_json(raw.get("host")), knobs=Knobs.from_json(raw.get("knobs") or {}),
                       isolation=Isolation(spec.isolation), command=tuple(spec.command))  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """One harness call: which repeats to measure, and everything their records say about where.

    The runner writes it into the attempt folder (the harness's only input besides `--out` and
    `--attempt`); run by hand, the harness builds the same object from its own flags."""

    repeats: tuple[RepeatSpec, ...]
    cell: dict[str, Any] = field(default_factory=dict)  # the records' `cell`: its id and every axis value
    knobs: Knobs = field(default_factory=Knobs)  # the run-time axes the harness applies (the cell's)
    image: dict[str, Any] = field(default_factory=dict)  # the environment as built (backend, image or venv)
    host: Host = field(default_factory=Host)  # the machine, as the runner read it (or the harness, by hand)
    isolation: Isolation = DEFAULT_ISOLATION
    timeout: float = DEFAULT_TIMEOUT_S  # seconds one repeat may take
    verbose: bool = False  # show each scenario process's own output

    def to_json(self) -> dict[str, Any]:
        return {
            "repeats": [spec.to_json() for spec in self.repeats],
            "cell": self.cell,
            "knobs": self.knobs.to_json(),
            "image": self.image,
            "host": self.host.to_json(),
            "isolation": str(self.isolation),
            "timeout": self.timeout,
            "verbose": self.verbose,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        return cls(
            repeats=tuple(RepeatSpec.from_json(spec) for spec in raw["repeats"]),
            cell=dict(raw.get("cell") or {}),
            knobs=Knobs.from_json(raw.get("knobs") or {}),
            image=dict(raw.get("image") or {}),
            host=Host.from_json(raw.get("host")),
            isolation=Isolation(raw.get("isolation", DEFAULT_ISOLATION)),
            timeout=float(raw.get("timeout", DEFAULT_TIMEOUT_S)),
            verbose=bool(raw.get("verbose", False)),
        )

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> Plan:
        return cls.from_json(json.loads(path.read_text()))


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
