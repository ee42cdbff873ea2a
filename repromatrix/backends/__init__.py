"""Where cells run: `docker` (the real thing) or `local` (a cached virtualenv per TF version).

Both run the same harness (`python -m scenarios`) with the same arguments and
the same lock files; they differ only in how the environment is made and
entered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from repromatrix.matrix import Cell


def cache_dir() -> Path:
    base = os.environ.get("REPROMATRIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "repromatrix"
    )
    return Path(base)


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
