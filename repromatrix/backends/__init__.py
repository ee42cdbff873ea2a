"""Where cells run: `docker` (the real thing) or `local` (a cached virtualenv per TF version).

Both run the same harness (`python -m scenarios`) with the same arguments and
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

from repromatrix.matrix import Cell
from repromatrix.scenarios import SCENARIOS_DIR, is_scenario_module


def cache_dir() -> Path:
    base = os.environ.get("REPROMATRIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "repromatrix"
    )
    return Path(base)


def code_root(cache: Path | None = None, scenario_dirs: tuple[Path, ...] = ()) -> Path:
    """A folder whose only content is the package `scenarios`: the built-ins, their helpers and the
    user's scenario modules side by side, as every cell runs them (a container mounts it read-only).

    Content-addressed, so concurrent runs share it and an edit makes a new one. Staged rather than
    pointing into this package, which is installed as `repromatrix.scenarios` beside modules that
    must not be importable inside a cell.
    """
    files = {path.name: path.read_bytes() for path in sorted(SCENARIOS_DIR.glob("*.py"))}
    for directory in scenario_dirs:
        for path in sorted(directory.glob("*.py")):
            if is_scenario_module(path):
                files[path.name] = path.read_bytes()
    sha = hashlib.sha256()
    for name, content in sorted(files.items()):
        sha.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    root = (cache or cache_dir()) / "code" / sha.hexdigest()[:16]
    if not (root / "scenarios").is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
        (staging / "scenarios").mkdir()
        for name, content in files.items():
            (staging / "scenarios" / name).write_bytes(content)
        for path in [staging, staging / "scenarios", *(staging / "scenarios").iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # readable by a container's unprivileged user
        try:
            staging.rename(root)
        except OSError:  # another run staged the same content first
            shutil.rmtree(staging, ignore_errors=True)
    return root


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
    name: str

    def environment_key(self, cell: Cell) -> str:
        """Cheap: computed without building, so an unchanged cell is recognised before any work."""
        ...

    def skip_reason(self, cell: Cell) -> str | None:
        """Why this cell cannot run here (e.g. no GPU), or None."""
        ...

    def prepare(self, cell: Cell, verbose: bool) -> Prepared:
        """Build the image or virtualenv if missing; raises CellError."""
        ...

    def run(self, cell: Cell, prepared: Prepared, harness_args: list[str], out_dir: Path, timeout: float) -> HarnessRun:
        """Run the harness once for the cell; raises CellError if it could not run at all."""
        ...

    def build_cold(self, cell: Cell) -> float:
        """Build the cell's environment from nothing, throw it away; returns the seconds it took (bench)."""
        ...

    def sweep(self) -> None:
        """Remove what runs that died without cleaning up left behind (containers of a SIGKILLed run)."""
        ...
