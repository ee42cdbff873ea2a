"""Where cells run: `docker` (the real thing) or `local` (a cached virtualenv per TF version).

Both run the same harness (`python -m repromatrix.harness`) with the same arguments and
the same lock files; they differ only in how the environment is made and
entered.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from repromatrix.errors import FatalError
from repromatrix.harness.axes import AXES, ISA_FLAGS, NO_ISA_CAP, Cell
from repromatrix.harness.catalog import staged_files
from repromatrix.harness.launch import process_env


def cache_dir() -> Path:
    base = os.environ.get("REPROMATRIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "repromatrix"
    )
    return Path(base)


def code_root(cache: Path | None = None, scenario_dirs: tuple[Path, ...] = (), projects: tuple[Path, ...] = ()) -> Path:
    """A folder whose only content is the package `repromatrix` as a cell holds it: the harness, the
    built-in scenarios, and every file of the user's scenario folders (scenarios, helper modules,
    subpackages, small data files) beside them (a container mounts it read-only).

    Content-addressed, so concurrent runs share it and an edit — to a helper or a data file too —
    makes a new one. Staged rather than pointing into this package, whose other modules (the
    runner, the reporter) have no business inside a cell.
    """
    files = staged_files(scenario_dirs, projects)  # and the folders commands run from
    sha = hashlib.sha256()
    for name, path in sorted(files.items()):
        sha.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    root = (cache or cache_dir()) / "code" / sha.hexdigest()[:16]
    if not (root / PACKAGE).is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
        for name, path in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # readable by a container's unprivileged user
        try:
            staging.rename(root)
        except OSError:  # another run staged the same content first
            shutil.rmtree(staging, ignore_errors=True)
    return root


def host_cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return set(value.split())
    except OSError:
        pass
    return set()


def isa_lacking(flags: set[str]) -> str | None:
    """The oldest instruction-set cap this CPU cannot run (its flags lack some of it), or None when it has them all.

    What "hardware this host lacks" means is read from the host, never assumed: an AMD EPYC lacks
    avx512_core_amx, an Intel Xeon with AMX lacks only what it does not list.
    """
    lacking = [isa for isa, needed in ISA_FLAGS.items() if not set(needed) <= flags]
    return lacking[0] if lacking else None


def hardware_skip_reason(cell: Cell, host_cores: int, flags: set[str] | None = None) -> str | None:
    """Why this host cannot emulate the cell's hardware, or None. Never capped silently."""
    if cell.cpus > host_cores:
        return f"needs {cell.cpus} cores, this host has {host_cores}"
    if cell.cpu_isa != NO_ISA_CAP:
        flags = host_cpu_flags() if flags is None else flags
        lacking = [flag for flag in ISA_FLAGS[cell.cpu_isa] if flag not in flags]
        if lacking:
            return f"needs a CPU with {cell.cpu_isa} ({', '.join(lacking)} missing on this host)"
    return None


def cell_env(cell: Cell, pythonpath: str, knobs: bool = False) -> dict[str, str]:
    """The variables a process in the cell's environment gets, on either backend (launch.process_env);
    with `knobs`, the cell's knobs too (a shell: the harness applies them itself, from its plan). What an
    environment axis sets (keras = "tf-keras": TF_USE_LEGACY_KERAS=1) belongs to the environment: always."""
    return {**process_env(pythonpath, cell.knobs if knobs else None), **image_env(cell)}


def image_env(cell: Cell) -> dict[str, str]:
    """The variables the cell's environment axes set, for every process in it (the harness's children too)."""
    found: dict[str, str] = {}
    for axis in AXES:
        if not axis.at_run_time:
            found.update(axis.env(getattr(cell, axis.name)))
    return found


# The staged package's name in a cell, and the harness a cell runs: `python -P -m repromatrix.harness`.
PACKAGE = "repromatrix"
HARNESS_MODULE = f"{PACKAGE}.harness"


def harness_args(attempt: str, out: str) -> list[str]:
    """What either backend passes the harness: the attempt (its plan file is in `out`) and the folder."""
    return ["-P", "-m", HARNESS_MODULE, "--attempt", attempt, "--out", out]


@dataclass(frozen=True)
class Prepared:
    """A ready environment: how to enter it, and what the records say about it."""

    key: str  # content hash of everything that defines the environment
    description: dict[str, Any] = field(default_factory=dict)
    handle: str = ""  # image id (docker) or virtualenv path (local)


@dataclass(frozen=True)
class HarnessRun:
    returncode: int
    stdout: str
    stderr: str
    oom_killed: bool = False


class Backend(Protocol):
    @property
    def name(self) -> str:
        """docker or local: what the records and the results folder's manifest say made them."""
        ...

    def environment_key(self, cell: Cell) -> str:
        """Cheap: computed without building, so an unchanged cell is recognised before any work."""
        ...

    def skip_reason(self, cell: Cell) -> str | None:
        """Why this cell cannot run here (e.g. no GPU), or None."""
        ...

    def prepare(self, cell: Cell, verbose: bool) -> Prepared:
        """Build the image or virtualenv if missing; raises CellError."""
        ...

    def run(self, cell: Cell, prepared: Prepared, attempt: str, out_dir: Path, timeout: float) -> HarnessRun:
        """Run the harness once for the cell, on the plan of `attempt` in `out_dir`; raises CellError if it
        could not run at all."""
        ...

    def build_cold(self, cell: Cell) -> float:
        """Build the cell's environment from nothing, throw it away; returns the seconds it took (bench)."""
        ...

    def lost(self, exc: Exception, cell: Cell) -> FatalError | None:
        """The fatal error `exc` stands for when it means the backend itself is gone (an engine
        that stopped answering), else None: then it is this cell's problem alone."""
        ...

    def sweep(self) -> None:
        """Remove what runs that died without cleaning up left behind (containers of a SIGKILLed run)."""
        ...

    def shell(self, cell: Cell, command: list[str], workdir: Path) -> int:
        """Run `command` in the cell's environment (its knobs set, the scenarios importable); its exit code."""
        ...
